/**
 * Parameter substitution for sweeps: `{name}` in a template string is replaced by the row's
 * value for `name` (an identifier: letters, digits, `_`, not starting with a digit).
 * `{{` and `}}` stand for literal braces; any other brace is literal too, so shell and awk
 * snippets such as `awk '{print $1}'` pass through unchanged. Jobs without params are not
 * substituted at all. Pure functions.
 */
import type { Command } from '../api/jobs/schemas.js';
import type { TaskTemplate } from './model.js';

const TOKEN_RE = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Placeholder names used in a string, in order of first use. */
export function placeholdersOf(text: string, into: Set<string> = new Set()): Set<string> {
  for (const m of text.matchAll(TOKEN_RE)) if (m[1] !== undefined) into.add(m[1]);
  return into;
}

/** Placeholder names used anywhere in a template (command, env values, cwd, stdin). */
export function templatePlaceholders(t: TaskTemplate): string[] {
  const names = new Set<string>();
  for (const s of commandStrings(t.command)) placeholdersOf(s, names);
  for (const v of Object.values(t.env)) placeholdersOf(v, names);
  if (t.cwd !== null) placeholdersOf(t.cwd, names);
  if (t.stdin !== null) placeholdersOf(t.stdin, names);
  return [...names];
}

/** Replaces placeholders; every name must be in `vars` (checked at submission). */
export function substitute(text: string, vars: Readonly<Record<string, string>>): string {
  if (text.indexOf('{') < 0 && text.indexOf('}') < 0) return text;
  return text.replace(TOKEN_RE, (whole, name: string | undefined) => {
    if (name === undefined) return whole[0]!;
    const v = vars[name];
    return v === undefined ? whole : v;
  });
}

export function substituteCommand(cmd: Command, vars: Readonly<Record<string, string>>): Command {
  return typeof cmd === 'string' ? substitute(cmd, vars) : cmd.map((a) => substitute(a, vars));
}

export function substituteTemplate(t: TaskTemplate, vars: Readonly<Record<string, string>>): TaskTemplate {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(t.env)) env[k] = substitute(v, vars);
  return {
    command: substituteCommand(t.command, vars),
    env,
    cwd: t.cwd === null ? null : substitute(t.cwd, vars),
    stdin: t.stdin === null ? null : substitute(t.stdin, vars),
    stdinB64: t.stdinB64,
  };
}

function commandStrings(cmd: Command): readonly string[] {
  return typeof cmd === 'string' ? [cmd] : cmd;
}
