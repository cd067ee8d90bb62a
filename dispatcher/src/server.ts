/**
 * Starts every service of the dispatcher on one core: HTTP (:8080) first, then the boot
 * protocols. `startDispatcher` is what `main` and the integration tests call.
 */
import type { DispatcherConfig } from './config.js';
import type { Logger } from './log.js';
import { VERSION } from './version.js';
import { createCore, closeCore, type Core } from './core.js';
import { buildApp, type AppPlugin } from './http/app.js';
import { resolveNodeNetwork } from './net/interfaces.js';
import { createOperatorSurface, type OperatorSurface } from './api/surface.js';
import { startBootServices } from './boot/services.js';
import { planKexec } from './boot/kexec-plan.js';
import { OnDemandImages } from './images/on-demand.js';
import { missingClusterImages } from './images/assignment.js';
import { startDhcp } from './dhcp/server.js';
import { startDispatch } from './dispatch/service.js';
import type { TaskDispatcher } from './dispatch/engine.js';
import { AgentHub } from './agents/hub.js';
import { agentHubPlugin } from './agents/plugin.js';
import { startNetconsole } from './console/netconsole.js';
import { powerStatesOf } from './power/power-state.js';
import { startPowerAutomation } from './power/automation.js';
import { startSol } from './console/sol.js';
import type { SharedStore } from './store/postgres/shared-store.js';
import { leaderRoutes } from './ha/leader-routes.js';
import { bootServerRoutes } from './api/boot-servers/routes.js';

export interface RunningDispatcher {
  core: Core;
  /** The HTTP port actually bound (useful with httpPort 0 in tests). */
  httpPort: number;
  /** The web page's log-in link (carries the admin token). */
  loginUrl: string;
  /** API, web page, metrics, node control (tests attach a NodeControl through it). */
  operator: OperatorSurface;
  /** The dispatch engine (task list, store): the agent hub's DispatchEngine, the job API's backend. */
  dispatch: TaskDispatcher;
  /** The agent hub (connected agents, node control). */
  agents: AgentHub;
  stop(): Promise<void>;
}

export interface Stoppable {
  stop(): Promise<void> | void;
}

export async function startDispatcher(opts: { config: DispatcherConfig; log: Logger; shared?: SharedStore }): Promise<RunningDispatcher> {
  const { config, log } = opts;
  const network = resolveNodeNetwork(config.interface, config.advertiseAddress);
  const core = createCore({ config, log, network, ...(opts.shared ? { shared: opts.shared } : {}) });
  // Standbys that take over later use the same secrets (the image's key, the tokens).
  await opts.shared?.publishSecrets(config.dataDir);
  // Nodes' power as last seen, followed from the first event on (node view, healing, power policy).
  powerStatesOf(core);
  const stoppables: Stoppable[] = [];
  for (const image of missingClusterImages(core.cluster, core.images.catalog)) {
    const message = `the cluster file names image "${image}", which is not built: its nodes get no boot script until \`make image IMAGE=${image} FROM=... (or PACKAGES=...)\` builds it`;
    log.error({ image, clusterFile: config.clusterFile }, message);
    core.events.append({ kind: 'image.missing', message, data: { image } });
  }

  // Services: each area adds its own here (boot protocols, dispatch, operator surface).
  const plugins: AppPlugin[] = [];

  // Operator surface first: its OpenAPI collector must see every route registered after it.
  const operator = createOperatorSurface(core);
  plugins.push(...operator.plugins);
  plugins.push(leaderRoutes(core, () => `http://${network.address}:${httpPort}`));
  stoppables.push(operator);

  // Dispatch: the task list and its store (recovered at once, queued tasks read back in the
  // background), the job/task API. The agent hub feeds agents from `dispatch.engine`.
  const dispatch = startDispatch(core);
  plugins.push(...dispatch.plugins);
  stoppables.push(dispatch);

  // Agent hub: the agents' WebSocket (/api/v1/agent), fed from the dispatch engine; node
  // control for the operator surface. Stopped before the engine (stoppables run in reverse).
  const agents = new AgentHub(core, dispatch.engine);
  plugins.push(agentHubPlugin(agents));
  operator.attachControl(agents);
  core.nodeHealth.attach(agents);
  dispatch.engine.onAttemptEnded((a) => core.nodeHealth.attemptEnded(a));
  stoppables.push(agents);

  // Boot chain: boot files in memory, TFTP, HTTP boot routes, boot timeline API.
  const boot = await startBootServices(core, { liveNodes: agents });
  plugins.push(...boot.plugins);
  stoppables.push(boot);
  // Boot servers of other segments: their registry, the scripts and files they ask for, their boots.
  plugins.push(bootServerRoutes(core, { http: boot.http, imageFiles: boot.imageFiles }));

  const app = await buildApp(core, plugins);
  await app.listen({ port: config.httpPort, host: config.httpHost });
  const addr = app.server.address();
  const httpPort = typeof addr === 'object' && addr ? addr.port : config.httpPort;

  // DHCP (full, proxy or off) after HTTP listens: its boot URLs carry the port actually bound.
  const dhcp = await startDhcp(core, { httpPort }).catch(async (err: unknown) => {
    for (const s of stoppables.reverse()) await s.stop();
    await app.close();
    await closeCore(core);
    throw err;
  });
  stoppables.push(dhcp);
  // Kernel messages of the nodes (netconsole, UDP): not fatal when its port is taken.
  stoppables.push(await startNetconsole(core));
  // Serial consoles of the nodes with an IPMI BMC (Serial-over-LAN, one ipmitool each).
  stoppables.push(startSol(core));
  // Reboots by kexec boot the same files at the same URLs as the boot scripts.
  const dispatcherUrl = `http://${network.address}:${httpPort}`;
  operator.attachKexec((n) => planKexec(core, boot.imageFiles, n, dispatcherUrl));
  if (core.cluster.onDemand) {
    const onDemand = new OnDemandImages({
      core,
      hasWorkFor: (c) => dispatch.engine.hasWorkFor(c),
      control: () => agents,
      actions: operator.api.actions,
      policy: core.cluster.onDemand,
    });
    onDemand.start();
    stoppables.push({ stop: async () => onDemand.stop() });
  }
  // Self-healing and power driven by the queue (cluster file healing, powerPolicy), when asked for.
  stoppables.push(startPowerAutomation({ core, queue: dispatch.engine, control: () => agents, actions: operator.api.actions }));

  const loginUrl = `http://${network.address}:${httpPort}/login?token=${encodeURIComponent(core.secrets.adminToken)}`;
  log.info(
    { version: VERSION, interface: network.name, address: network.address, httpPort, dhcp: config.dhcp.mode, dataDir: config.dataDir },
    'dispatcher started',
  );
  process.stderr.write(`\n  Dashboard: ${loginUrl}\n  Admin token: ${config.dataDir}/admin.token\n\n`);

  return {
    core,
    httpPort,
    loginUrl,
    operator,
    dispatch: dispatch.engine,
    agents,
    async stop() {
      for (const s of stoppables.reverse()) await s.stop();
      await app.close();
      await closeCore(core);
    },
  };
}
