/**
 * A read-only tree of files the builder takes inputs from: a Debian package's filesystem
 * tar (`dpkg-deb --fsys-tarfile` piped into tar-stream, nothing written to disk, no root
 * needed) or a directory on the host (the KERNEL=/MODULES= override).
 */
import { spawn } from 'node:child_process';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { ImageBuildError } from './errors.js';
import { toolFailed } from './tools.js';

export interface TreeEntry {
  /** Path inside the tree, relative, without "./": "lib/modules/6.1.0-56-amd64/kernel/..." */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';
  mode: number;
  size: number;
  /** Symlink target, or for a hard link the path it links to. */
  linkTarget?: string;
}

/**
 * Visits every entry; `want` decides (from the header alone) whether the data is needed,
 * and `onData` then receives it whole. Entries arrive in the tree's own order.
 */
export interface FileTree {
  readonly description: string;
  scan(want: (e: TreeEntry) => boolean, onData: (e: TreeEntry, data: Buffer) => void): Promise<void>;
}

function normalise(name: string): string {
  return name.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
}

export class DebTree implements FileTree {
  constructor(readonly debPath: string) {}
  get description(): string {
    return this.debPath;
  }

  async scan(want: (e: TreeEntry) => boolean, onData: (e: TreeEntry, data: Buffer) => void): Promise<void> {
    const child = spawn('dpkg-deb', ['--fsys-tarfile', this.debPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          e.code === 'ENOENT'
            ? new ImageBuildError('IMG_ERR_MISSING_TOOL', 'missing program: dpkg-deb', { hint: 'apt-get install dpkg', cause: e })
            : e,
        ),
      );
      child.on('close', (code, signal) =>
        code === 0 ? resolve() : reject(toolFailed('dpkg-deb', ['--fsys-tarfile', this.debPath], code, signal, stderr)),
      );
    });
    exited.catch(() => {}); // observed below; avoid an unhandled rejection while we read
    const tar = extract();
    child.stdout.pipe(tar);
    try {
      for await (const entry of tar) {
        const h = entry.header;
        const e: TreeEntry = {
          path: normalise(h.name),
          type:
            h.type === 'file' || h.type === 'contiguous-file'
              ? 'file'
              : h.type === 'directory'
                ? 'directory'
                : h.type === 'symlink'
                  ? 'symlink'
                  : h.type === 'link'
                    ? 'hardlink'
                    : 'other',
          mode: (h.mode ?? 0) & 0o7777,
          size: h.size ?? 0,
          ...(h.linkname ? { linkTarget: h.type === 'link' ? normalise(h.linkname) : h.linkname } : {}),
        };
        const wanted = e.path !== '' && want(e);
        if (wanted && e.type === 'file') {
          const chunks: Buffer[] = [];
          for await (const c of entry) chunks.push(c as Buffer);
          onData(e, Buffer.concat(chunks));
        } else {
          entry.resume();
        }
      }
    } catch (err) {
      child.kill();
      await exited.catch(() => {});
      if (err instanceof ImageBuildError) throw err;
      throw new ImageBuildError('IMG_ERR_INPUT', `cannot read ${this.debPath}: ${(err as Error).message}`, {
        hint: 'delete the file (a cached download may be damaged) and build again',
        cause: err,
      });
    }
    await exited;
  }
}

/** A directory on the host, presented with paths under `prefix` (e.g. lib/modules/<version>). */
export class DirectoryTree implements FileTree {
  constructor(
    readonly root: string,
    readonly prefix: string,
  ) {}
  get description(): string {
    return this.root;
  }

  async scan(want: (e: TreeEntry) => boolean, onData: (e: TreeEntry, data: Buffer) => void): Promise<void> {
    const walk = (rel: string) => {
      const abs = rel ? join(this.root, rel) : this.root;
      for (const name of readdirSync(abs).sort()) {
        const relChild = rel ? `${rel}/${name}` : name;
        const absChild = join(abs, name);
        const st = lstatSync(absChild);
        const path = this.prefix ? `${this.prefix}/${relChild}` : relChild;
        if (st.isDirectory()) {
          want({ path, type: 'directory', mode: st.mode & 0o7777, size: 0 });
          walk(relChild);
        } else if (st.isSymbolicLink()) {
          want({ path, type: 'symlink', mode: 0o777, size: 0, linkTarget: readlinkSync(absChild) });
        } else if (st.isFile()) {
          const e: TreeEntry = { path, type: 'file', mode: st.mode & 0o7777, size: st.size };
          if (want(e)) onData(e, readFileSync(absChild));
        }
      }
    };
    try {
      walk('');
    } catch (err) {
      throw new ImageBuildError('IMG_ERR_INPUT', `cannot read ${this.root}: ${(err as Error).message}`, { cause: err });
    }
  }
}
