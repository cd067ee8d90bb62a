/** Shared protocol fixtures for unit and integration tests. */
import type { Inventory } from '../../../dispatcher/src/protocol/messages.js';

export const FAKE_INVENTORY: Inventory = {
  hostname: 'sim',
  cpu: { model: 'Sim CPU', cores: 4, physicalCores: 4, speedGHz: null },
  memoryMiB: 8192,
  nics: [],
  disks: [],
  system: { manufacturer: '', model: '', uuid: '', serial: '' },
  os: { kernel: 'sim', distro: 'sim', arch: 'x64' },
  ramRoot: false,
};
