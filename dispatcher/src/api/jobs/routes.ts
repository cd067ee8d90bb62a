/**
 * The task and job API under /api/v1 (a fastify plugin). Reads are open like the rest of the
 * API; anything that changes state needs the admin token.
 *
 *   POST /api/v1/blobs                 upload an inputs tar → { id, bytes } (admin)
 *   POST /api/v1/jobs                  submit a job (admin):
 *        application/json                      the JobSubmission, params inline
 *        application/x-lilcluster-sweep?format=csv|jsonl
 *                                              line 1: the JobSubmission (JSON, no params);
 *                                              then the params file as is (errors name its lines)
 *   GET  /api/v1/jobs[?state&before&limit]     newest first
 *   GET  /api/v1/jobs/:id
 *   GET  /api/v1/jobs/:id/tasks[?state&after&limit]   and GET /api/v1/tasks for every job
 *   GET  /api/v1/tasks/:id
 *   GET  /api/v1/jobs/:id/results?format=csv|jsonl    streamed
 *   GET  /api/v1/jobs/:id/outputs.tar                 streamed (admin: the files are whatever the
 *        tasks wrote, and each stored tar is inflated again to serve them)
 *   GET  /api/v1/jobs/:id/inputs.tar?key=K            for agents: the key in the task's
 *        inputsPath is the credential (a per-job random capability, only ever sent to agents
 *        over their authenticated connection); the admin token works too
 *   POST /api/v1/jobs/:id/cancel, POST /api/v1/tasks/:id/cancel   (admin)
 *   GET  /api/v1/dispatch              engine counts (throughput over time: /api/v1/status)
 */
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Readable } from 'node:stream';
import type { Core } from '../../core.js';
import { requireAdmin, adminTokenOf, type AppPlugin } from '../../http/app.js';
import { tokensEqual } from '../../trust/secrets.js';
import { DispatcherError } from '../../errors.js';
import type { Mac } from '../../nodes/mac.js';
import {
  JobSubmissionSchema,
  JobViewSchema,
  TaskDetailSchema,
  TaskStateSchema,
  TaskSummarySchema,
  JOB_STATES,
  type TaskState,
  type JobState,
  SWEEP_CONTENT_TYPE,
  type ResourcesRequest,
} from './schemas.js';
import { knownNode, requestTooLarge } from '../../dispatch/resources.js';
import type { TaskDispatcher } from '../../dispatch/engine.js';
import { badSubmission } from '../../dispatch/submission.js';
import { PARAMS_FORMATS, type ParamsFormat } from '../../dispatch/params-file.js';
import { exportOutputs, exportResults } from '../../dispatch/export.js';

/** Largest streamed sweep body (a million rows of a few columns is ~20 MB). */
export const MAX_SWEEP_BYTES = 2 * 1024 * 1024 * 1024;
/** Largest first line (the job spec) of a streamed sweep. */
export const MAX_SPEC_LINE_BYTES = 4 * 1024 * 1024;
const BLOB_TYPES = ['application/x-tar', 'application/octet-stream', 'application/gzip', 'application/x-gzip'];

const ErrorBody = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }) });
const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 503: ErrorBody };
const Id = Type.Object({ id: Type.Integer({ minimum: 1 }) });
const ADMIN = [{ adminToken: [] }, { adminCookie: [] }];

const TaskPage = Type.Object({
  tasks: Type.Array(TaskSummarySchema),
  nextAfterId: Type.Union([Type.Integer(), Type.Null()], { description: 'pass as `after` for the next page; null at the end' }),
});
const TasksQuery = Type.Object({
  state: Type.Optional(TaskStateSchema),
  after: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});

/**
 * A job that requires an image (`submit --image`) must name one that is built and that some
 * node runs or boots, else its tasks would wait forever: refused, naming what to do.
 */
function checkImage(core: Core, spec: unknown): void {
  const image = (spec as { requirements?: { image?: unknown } } | null)?.requirements?.image;
  if (typeof image !== 'string') return; // absent, or submission.ts refuses it with the field named
  if (!core.images.catalog.get(image))
    throw new DispatcherError('DSP_ERR_IMAGE_NOT_FOUND', `requirements.image: no image named "${image}" is built`, {
      hint: `dispatcherctl images lists them; build it with make image IMAGE=${image} FROM=... (or PACKAGES=...)`,
    });
  const { assignments } = core.images;
  const nodes = core.nodes.list().filter((n) => n.enrollment === 'admitted');
  const switchable = core.cluster.onDemand?.images ?? [];
  // With on-demand images, a node on one of its images may be moved to this one.
  const onDemand = switchable.includes(image) && nodes.some((n) => switchable.includes(n.bootedImage?.name ?? assignments.imageOf(n)));
  if (!onDemand && !nodes.some((n) => assignments.imageOf(n) === image || n.bootedImage?.name === image))
    throw new DispatcherError('DSP_ERR_BAD_SUBMISSION', `requirements.image: no node runs or boots image "${image}"`, {
      hint: `give nodes that image: dispatcherctl set NODE --image ${image} (then reboot them), or labelImages in the cluster file`,
    });
}

/**
 * A request (`submit --cores --mem --gpus`) larger than every node the cluster knows could
 * run would wait forever: refused, naming the field (dispatch/resources.ts).
 */
function checkResources(core: Core, spec: unknown, req: { ip: string; log: { warn: (o: object, msg: string) => void } }): void {
  const request = (spec as { resources?: ResourcesRequest } | null)?.resources;
  if (!request || typeof request !== 'object') return; // absent, or submission.ts refuses it with the field named
  const nodes = core.nodes
    .list()
    .filter((n) => n.enrollment === 'admitted')
    .map((n) => knownNode(n.name, n.inventory));
  const big = requestTooLarge(request, nodes);
  if (!big) return;
  req.log.warn({ ip: req.ip, field: big.field, why: big.message }, 'submission refused');
  throw new DispatcherError('DSP_ERR_RESOURCES_TOO_LARGE', big.message, {
    hint: `ask for less (dispatcherctl submit ${big.flag}), or add a node that has it; dispatcherctl nodes shows what each hands out`,
  });
}

export function dispatchRoutes(core: Core, engine: TaskDispatcher): AppPlugin {
  return {
    name: 'dispatch',
    plugin: async (plain) => {
      const app = plain.withTypeProvider<TypeBoxTypeProvider>();
      const admin = requireAdmin(core);
      const nodeName = (mac: string) => core.nodes.byMac(mac as Mac)?.name;

      // Raw bodies for uploads and streamed sweeps: the handler reads the stream itself.
      app.addContentTypeParser([SWEEP_CONTENT_TYPE, ...BLOB_TYPES], (_req, payload, done) => done(null, payload));

      app.post(
        '/api/v1/blobs',
        {
          onRequest: requireAdmin(core, { accepts: BLOB_TYPES }),
          schema: {
            summary: 'upload an inputs tar (then name it in a submission as `inputs`)',
            tags: ['jobs'],
            security: ADMIN,
            response: { 201: Type.Object({ id: Type.String(), bytes: Type.Integer() }), ...errors },
          },
        },
        async (req, reply) => {
          if (!isStream(req.body))
            throw new DispatcherError('DSP_ERR_BAD_REQUEST', `send the tar as the body, with content-type ${BLOB_TYPES[0]}`);
          const blob = await engine.blobs.put(req.body as unknown as Readable);
          return reply.code(201).send(blob);
        },
      );

      app.post(
        '/api/v1/jobs',
        {
          onRequest: requireAdmin(core, { accepts: ['application/json', SWEEP_CONTENT_TYPE] }),
          // Validation is submission.ts's (messages that name the field and the line); the
          // schema is here for the API documentation.
          validatorCompiler: () => () => true,
          schema: {
            summary: 'submit a job: one task, a list of tasks, or a sweep (one task per params row)',
            description: `JSON body, or \`${SWEEP_CONTENT_TYPE}\` with \`?format=csv|jsonl\`: the JobSubmission on the first line, the params file after it.`,
            tags: ['jobs'],
            security: ADMIN,
            querystring: Type.Object({ format: Type.Optional(Type.Union(PARAMS_FORMATS.map((f) => Type.Literal(f)))) }),
            body: JobSubmissionSchema,
            response: { 201: JobViewSchema, ...errors, 413: ErrorBody },
          },
        },
        async (req, reply) => {
          const type = String(req.headers['content-type'] ?? '')
            .split(';')[0]!
            .trim()
            .toLowerCase();
          let job;
          if (type === SWEEP_CONTENT_TYPE) {
            const format = (req.query as { format?: string }).format;
            if (!format || !PARAMS_FORMATS.includes(format as ParamsFormat))
              throw badSubmission(`?format=csv or ?format=jsonl is needed with ${SWEEP_CONTENT_TYPE}`);
            const { first, rest } = await splitFirstLine(req.body as unknown as Readable);
            let spec: unknown;
            try {
              spec = JSON.parse(first);
            } catch (err) {
              throw badSubmission(`line 1 of the body must be the job as JSON: ${(err as Error).message}`);
            }
            checkImage(core, spec);
            checkResources(core, spec, req);
            await fetchInputs(engine, spec);
            job = await engine.submitJobStream(spec, format as ParamsFormat, rest);
          } else {
            checkImage(core, req.body);
            checkResources(core, req.body, req);
            await fetchInputs(engine, req.body);
            job = await engine.submitJob(req.body);
          }
          req.log.info({ job: job.id, tasks: job.counts.total }, 'job submitted');
          return reply.code(201).send(job);
        },
      );

      app.get(
        '/api/v1/jobs',
        {
          schema: {
            summary: 'list jobs, newest first',
            tags: ['jobs'],
            querystring: Type.Object({
              state: Type.Optional(Type.Union(JOB_STATES.map((s) => Type.Literal(s)))),
              before: Type.Optional(Type.Integer({ minimum: 1, description: 'jobs with a smaller id (paging)' })),
              limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
            }),
            response: { 200: Type.Object({ jobs: Type.Array(JobViewSchema) }), 400: ErrorBody },
          },
        },
        async (req) => {
          const q = req.query as { state?: JobState; before?: number; limit?: number };
          return { jobs: engine.listJobs({ state: q.state, beforeId: q.before, limit: q.limit }) };
        },
      );

      app.get(
        '/api/v1/jobs/:id',
        { schema: { summary: 'one job and its progress counts', tags: ['jobs'], params: Id, response: { 200: JobViewSchema, ...errors } } },
        async (req) => engine.getJob((req.params as { id: number }).id),
      );

      app.get(
        '/api/v1/jobs/:id/tasks',
        {
          schema: {
            summary: "a page of a job's tasks",
            tags: ['jobs'],
            params: Id,
            querystring: TasksQuery,
            response: { 200: TaskPage, ...errors },
          },
        },
        async (req) => {
          const q = req.query as { state?: TaskState; after?: number; limit?: number };
          return engine.listTasks({ jobId: (req.params as { id: number }).id, state: q.state, afterId: q.after, limit: q.limit });
        },
      );

      app.get(
        '/api/v1/tasks',
        {
          schema: {
            summary: 'a page of tasks of every job',
            tags: ['jobs'],
            querystring: TasksQuery,
            response: { 200: TaskPage, 400: ErrorBody },
          },
        },
        async (req) => {
          const q = req.query as { state?: TaskState; after?: number; limit?: number };
          return engine.listTasks({ state: q.state, afterId: q.after, limit: q.limit });
        },
      );

      app.get(
        '/api/v1/tasks/:id',
        // Its environment and output may hold the operator's secrets (API keys): admin only.
        {
          onRequest: admin,
          schema: {
            summary: 'one task: command, environment, state, copies running, result, failed attempts',
            tags: ['jobs'],
            security: ADMIN,
            params: Id,
            response: { 200: TaskDetailSchema, ...errors },
          },
        },
        async (req) => engine.getTask((req.params as { id: number }).id),
      );

      // Streamed answers: the untyped instance (a stream is no JSON body).
      plain.get(
        '/api/v1/jobs/:id/results',
        {
          // Every task's stdout and stderr: admin only, like the outputs.
          onRequest: admin,
          schema: {
            summary: "a job's results, one line per task (streamed)",
            tags: ['jobs'],
            security: ADMIN,
            params: Id,
            querystring: Type.Object({ format: Type.Optional(Type.Union([Type.Literal('csv'), Type.Literal('jsonl')])) }),
            response: { 200: Type.String({ description: 'text/csv or application/x-ndjson' }), ...errors },
          },
        },
        async (req, reply) => {
          const id = (req.params as { id: number }).id;
          const format = (req.query as { format?: 'csv' | 'jsonl' }).format ?? 'csv';
          const stream = exportResults(engine, id, format, nodeName);
          return reply
            .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
            .header('content-disposition', `attachment; filename="job-${id}-results.${format}"`)
            .send(stream);
        },
      );

      // Streamed answers: the untyped instance (a stream is no JSON body).
      plain.get(
        '/api/v1/jobs/:id/outputs.tar',
        {
          onRequest: admin,
          schema: {
            summary: "every file the job's tasks returned, under task-<id>/ (streamed tar)",
            tags: ['jobs'],
            security: ADMIN,
            params: Id,
            response: { ...errors },
          },
        },
        async (req, reply) => {
          const id = (req.params as { id: number }).id;
          const tarStream = exportOutputs(engine, id, core.config.outputsMaxInflatedBytes);
          return reply
            .type('application/x-tar')
            .header('content-disposition', `attachment; filename="job-${id}-outputs.tar"`)
            .send(tarStream);
        },
      );

      // Streamed answers: the untyped instance (a stream is no JSON body).
      plain.get(
        '/api/v1/jobs/:id/inputs.tar',
        {
          schema: {
            summary: "a job's inputs tar, for the agents running its tasks (the key in the task's inputsPath, or the admin token)",
            tags: ['jobs'],
            params: Id,
            querystring: Type.Object({ key: Type.Optional(Type.String({ maxLength: 200 })) }),
            response: { ...errors },
          },
        },
        async (req, reply) => {
          const id = (req.params as { id: number }).id;
          const key = (req.query as { key?: string }).key ?? '';
          let blob = key ? engine.inputsOf(id, key) : undefined;
          if (!blob) {
            const token = adminTokenOf(req);
            if (token && tokensEqual(token, core.secrets.adminToken)) blob = engine.inputsOfJob(id);
            else if (!key)
              throw new DispatcherError('DSP_ERR_UNAUTHORIZED', 'this needs the key of the task inputsPath, or the admin token');
          }
          if (!blob || !(await engine.blobs.fetch(blob)))
            throw new DispatcherError('DSP_ERR_NOT_FOUND', `job ${id} has no inputs for this key`);
          return reply.type('application/x-tar').header('content-length', engine.blobs.size(blob)).send(engine.blobs.read(blob));
        },
      );

      app.post(
        '/api/v1/jobs/:id/cancel',
        {
          onRequest: admin,
          schema: {
            summary: 'cancel a job: queued tasks are dropped, running copies stopped',
            tags: ['jobs'],
            security: ADMIN,
            params: Id,
            response: { 200: JobViewSchema, ...errors },
          },
        },
        async (req) => engine.cancelJob((req.params as { id: number }).id),
      );

      app.post(
        '/api/v1/tasks/:id/cancel',
        {
          onRequest: admin,
          schema: {
            summary: 'cancel one task (a running copy is stopped)',
            tags: ['jobs'],
            security: ADMIN,
            params: Id,
            response: { 200: TaskDetailSchema, ...errors },
          },
        },
        async (req) => engine.cancelTask((req.params as { id: number }).id),
      );

      app.get(
        '/api/v1/dispatch',
        {
          schema: {
            summary: 'dispatch engine: tasks by state and totals (throughput over time: /api/v1/status)',
            tags: ['jobs'],
          } as object,
        },
        async () => ({ stats: engine.stats() }),
      );
    },
  };
}

function isStream(x: unknown): x is Readable {
  return typeof x === 'object' && x !== null && typeof (x as Readable).pipe === 'function';
}

/**
 * Reads a stream's first line (the job) and hands back the rest as a stream of chunks,
 * with a size limit on the whole.
 */
export async function splitFirstLine(body: Readable): Promise<{ first: string; rest: AsyncIterable<Buffer> }> {
  if (!isStream(body)) throw badSubmission('empty body');
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  let total = 0;
  for (;;) {
    const { value, done } = await it.next();
    if (done) {
      const first = head.toString('utf8');
      return { first, rest: (async function* () {})() };
    }
    total += value.length;
    head = head.length ? Buffer.concat([head, value]) : value;
    const nl = head.indexOf(10);
    if (nl >= 0) {
      const first = head.subarray(0, nl).toString('utf8');
      const leftover = head.subarray(nl + 1);
      const rest = (async function* () {
        if (leftover.length) yield leftover;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          total += r.value.length;
          if (total > MAX_SWEEP_BYTES)
            throw new DispatcherError('DSP_ERR_PAYLOAD_TOO_LARGE', `params file larger than ${MAX_SWEEP_BYTES} bytes`);
          yield r.value;
        }
      })();
      return { first, rest };
    }
    if (head.length > MAX_SPEC_LINE_BYTES) throw badSubmission(`line 1 (the job) is longer than ${MAX_SPEC_LINE_BYTES} bytes`);
  }
}

/**
 * An inputs tar named by a submission may have been uploaded to the dispatcher that led before
 * a takeover: it is then in the PostgreSQL store only, and comes here before the submission
 * checks that it exists.
 */
async function fetchInputs(engine: TaskDispatcher, spec: unknown): Promise<void> {
  const inputs = (spec as { inputs?: unknown } | null)?.inputs;
  if (typeof inputs === 'string') await engine.blobs.fetch(inputs);
}
