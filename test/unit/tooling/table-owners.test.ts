/**
 * One module per table owns its SQL: every table the migrations create is read and written by
 * exactly one source file under dispatcher/src (plus the migration that creates it), so a
 * change of columns has one place to look. Other modules go through that file's functions.
 * The scan is checked on a deliberate violation first, so it cannot pass vacuously.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const ROOT = join(import.meta.dirname, '../../..');
const SRC = join(ROOT, 'dispatcher/src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** Table name → the files whose SQL names it (after FROM, INTO, UPDATE, JOIN or TABLE). */
function tableUsers(files: Record<string, string>): Map<string, Set<string>> {
  const tables = new Set<string>();
  for (const text of Object.values(files)) for (const m of text.matchAll(/CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)/g)) tables.add(m[1]!);
  const users = new Map<string, Set<string>>();
  for (const t of tables) users.set(t, new Set());
  for (const [file, text] of Object.entries(files))
    for (const t of tables) if (new RegExp(`\\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\\s+${t}\\b`).test(text)) users.get(t)!.add(file);
  return users;
}

function shared(users: Map<string, Set<string>>): Record<string, string[]> {
  return Object.fromEntries([...users].filter(([, f]) => f.size > 1).map(([t, f]) => [t, [...f].sort()]));
}

describe('one module per table owns its SQL', () => {
  it('finds a table whose SQL is in two modules (the check can fail)', () => {
    const users = tableUsers({
      'a.ts': "db.exec('CREATE TABLE widgets (id INTEGER)'); db.prepare('SELECT * FROM widgets');",
      'b.ts': "db.prepare('DELETE FROM widgets WHERE id = ?');",
      'c.ts': "db.prepare('SELECT 1');",
    });
    expect(shared(users)).toEqual({ widgets: ['a.ts', 'b.ts'] });
  });

  it('holds for dispatcher/src', () => {
    const files = Object.fromEntries(sourceFiles(SRC).map((f) => [relative(ROOT, f), readFileSync(f, 'utf8')]));
    const users = tableUsers(files);
    expect(users.size).toBeGreaterThan(10);
    expect(shared(users)).toEqual({});
  });
});
