/** `dispatcherctl status`: the cluster at a glance. */
import type { CommandModule } from '../command.js';
import type { StatusView } from '../../api/schemas.js';
import { formatDuration, formatMs } from '../output.js';

export const statusCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('status')
      .description('the cluster at a glance: nodes by state, task queue, throughput, store')
      .action(
        ctl.action(async (ctx) => {
          const s = await ctx.api.get<StatusView>('/api/v1/status');
          ctx.print(s, renderStatus);
        }),
      );
  },
};

const n = (v: number) => v.toLocaleString('en-US');

export function renderStatus(s: StatusView): string {
  const lines: string[] = [];
  const net = `${s.network.address}${s.network.interface ? ` on ${s.network.interface}` : ''}, DHCP ${s.network.dhcp}`;
  lines.push(`dispatcher  ${s.version}, up ${formatDuration(s.uptimeS * 1000)}, ${net}, enrollment ${s.enrollment}`);
  const byState = Object.entries(s.nodes.byState)
    .filter(([, c]) => c > 0)
    .map(([st, c]) => `${n(c)} ${st}`)
    .join(', ');
  lines.push(
    `nodes       ${n(s.nodes.total)} total${byState ? `: ${byState}` : ''}; ${n(s.nodes.connected)} connected` +
      (s.nodes.pending ? `; ${n(s.nodes.pending)} waiting for \`dispatcherctl approve\`` : '') +
      (s.nodes.denied ? `; ${n(s.nodes.denied)} unknown machines refused (GET /api/v1/denied)` : ''),
  );
  if (s.tasks) {
    const t = s.tasks;
    lines.push(
      `tasks       ${n(t.queued)} queued, ${n(t.running)} running, ${n(t.done)} done, ${n(t.failed)} failed${t.cancelled ? `, ${n(t.cancelled)} cancelled` : ''}`,
    );
  } else lines.push('tasks       (the dispatch engine reports no figures)');
  const pts = s.throughput.points;
  if (pts.length) {
    const recent = pts.slice(-Math.max(1, Math.round(300 / s.throughput.intervalS)));
    const total = recent.reduce((a, p) => a + p.completed, 0);
    const minutes = (recent.length * s.throughput.intervalS) / 60;
    lines.push(
      `throughput  ${n(Math.round(total / minutes))} tasks/min over the last ${formatDuration(recent.length * s.throughput.intervalS * 1000)}`,
    );
  }
  lines.push(
    `store       ${n(s.store.commits)} commits, ${n(s.store.writes)} writes, ${formatMs(s.store.avgCommitMs)} per commit on average` +
      (s.store.failure ? `; FAILING: ${s.store.failure}` : ''),
  );
  for (const op of s.operations) {
    const back = op.nodes.filter((x) => x.phase === 'back').length;
    lines.push(`operation   #${op.id} ${op.kind} ${op.state}: ${back}/${op.nodes.length} nodes back — ${op.message}`);
  }
  return lines.join('\n') + '\n';
}
