/** Ports for lab services that cannot listen on port 0 and say which (ipmi_sim, docker-registry, QEMU chardevs). */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

/** A port nobody listens on now on 127.0.0.1: the kernel's pick, released again. */
export async function freePort(type: 'udp' | 'tcp' = 'tcp'): Promise<number> {
  if (type === 'udp') {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    const { port } = s.address();
    await new Promise<void>((r) => s.close(r));
    return port;
  }
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
