/**
 * What the agent makes of a `tasks` message that does not validate. One bad assignment (a
 * dispatcher bug, a job stored before a bound existed) must cost that task, not the batch:
 * refusing the whole message would leave the agent counting those tasks as requested and
 * never asking for work again. So the authenticated body is read once more, assignment by
 * assignment: the valid ones run, the others are refused by (taskId, attempt) and reported
 * failed with the reason, and every slot of the batch is given back.
 */
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Channel } from '../../dispatcher/src/protocol/channel.js';
import { decodeDispatcherMessage, ProtocolError } from '../../dispatcher/src/protocol/codec.js';
import {
  MAX_BATCH,
  TaskAssignment as TaskAssignmentSchema,
  type AgentMessage,
  type DispatcherMessage,
} from '../../dispatcher/src/protocol/messages.js';
import type { TaskAssignment } from '../../dispatcher/src/protocol/messages.js';

export interface RefusedAssignment {
  taskId: number;
  attempt: number;
  reason: string;
}

/** A `tasks` message some of whose assignments the agent refused. */
export interface PartialTasks {
  type: 'tasks-partial';
  tasks: TaskAssignment[];
  refused: RefusedAssignment[];
  /** How many assignments the message held (each took a slot); null when not even that could be read. */
  total: number | null;
  /** Why the message did not validate as a whole. */
  problem: string;
}

/** What the agent's connection hands the agent: a protocol message, or a salvaged task batch. */
export type AgentInbound = DispatcherMessage | PartialTasks;

const check = TypeCompiler.Compile(TaskAssignmentSchema);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Decodes a dispatcher message; a `tasks` message that fails validation is salvaged assignment by assignment. */
export function decodeForAgent(body: Buffer | string): AgentInbound | ProtocolError {
  const msg = decodeDispatcherMessage(body);
  if (!(msg instanceof ProtocolError) || msg.about !== 'tasks') return msg;
  let list: unknown;
  try {
    list = (JSON.parse(typeof body === 'string' ? body : body.toString('utf8')) as { tasks?: unknown }).tasks;
  } catch {
    return msg; // not JSON: the codec said why
  }
  const problem = msg.message;
  if (!Array.isArray(list) || list.length > MAX_BATCH) return { type: 'tasks-partial', tasks: [], refused: [], total: null, problem };
  const tasks: TaskAssignment[] = [];
  const refused: RefusedAssignment[] = [];
  for (const t of list as unknown[]) {
    if (check.Check(t)) {
      tasks.push(t);
      continue;
    }
    const first = check.Errors(t).First();
    const ref = t as { taskId?: unknown; attempt?: unknown } | null;
    if (ref && typeof ref === 'object' && isCount(ref.taskId) && isCount(ref.attempt) && ref.attempt >= 1)
      refused.push({
        taskId: ref.taskId,
        attempt: ref.attempt,
        reason: `assignment refused by the agent: ${first?.path || '(assignment)'}: ${first?.message ?? 'does not match its schema'}`,
      });
  }
  return { type: 'tasks-partial', tasks, refused, total: list.length, problem };
}

/** The agent's end of its connection, with task batches salvaged (see decodeForAgent). */
export function agentInboundChannel(maxMessageBytes?: number): Channel<AgentInbound, AgentMessage> {
  return new Channel<AgentInbound, AgentMessage>(decodeForAgent, 'agent', maxMessageBytes);
}
