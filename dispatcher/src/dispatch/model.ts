/**
 * The engine's normalised job forms: a submission (api/jobs/schemas.ts JobSubmission) once
 * validated, with every default filled in. Internal to dispatch/; the API's schemas are in
 * api/jobs/schemas.ts.
 */
import type { Command } from '../api/jobs/schemas.js';
import type { Resources } from '../protocol/messages.js';

/** A submission once validated and normalised: every default filled in. */
export interface JobSpec {
  name: string | null;
  template: TaskTemplate;
  timeoutSeconds: number;
  priority: number;
  maxAttempts: number;
  /** Attempts more for a task that exits non-zero, each on a node it has not failed on (absent in jobs stored before retries: 0). */
  retries?: number;
  requirements: NormalRequirements;
  speculative: boolean;
  inputs: string | null;
  /** Placeholder names the template uses (each params row must provide them). */
  placeholders: string[];
  /** Column names of the params (sweep jobs), in file order. */
  columns: string[] | null;
  /** What each task row adds to the template: nothing, a params row, or overrides. */
  taskData: 'none' | 'params' | 'overrides';
}

export interface TaskTemplate {
  command: Command;
  env: Record<string, string>;
  cwd: string | null;
  stdin: string | null;
  stdinB64: string | null;
}

export interface NormalRequirements {
  labels: string[];
  minCores: number;
  minMemoryMiB: number;
  /** Only nodes that booted this image (`submit --image`); null (or absent, in jobs stored before images): any. */
  image?: string | null;
  /**
   * What each task takes while it runs (`submit --cores --mem --gpus`): a node hands out only
   * tasks that fit its free resources, and its agent holds the task to them. Null (or absent,
   * in jobs stored before resources): DEFAULT_TASK_RESOURCES, nothing enforced.
   */
  request?: Resources | null;
}
