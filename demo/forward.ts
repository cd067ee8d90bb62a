/**
 * A TCP forwarder from the host's localhost to the dispatcher on the demo bridge, run as its
 * own detached process (`demo.mjs forward ...`). The dispatcher listens on 10.77.0.1 only, so
 * its page and API are not offered on the host's real interfaces; http://localhost:8080 still
 * works in the host's browser (and through `ssh -L 8080:localhost:8080` from elsewhere).
 * Plain byte piping: HTTP, server-sent events and WebSockets pass through unchanged.
 */
import { connect, createServer, type Socket } from 'node:net';

export const FORWARD_READY = 'forwarding';

export function forward(listenHost: string, listenPort: number, targetHost: string, targetPort: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer((client: Socket) => {
      const upstream = connect(targetPort, targetHost);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    server.once('error', reject);
    server.listen(listenPort, listenHost, () => {
      process.stdout.write(`${FORWARD_READY} ${listenHost}:${listenPort} -> ${targetHost}:${targetPort}\n`);
      resolve();
    });
    // Open page connections (server-sent events) would hold server.close() forever.
    const stop = () => process.exit(0);
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
