/**
 * Shell completion scripts generated from the command tree, so they never fall behind the
 * commands: subcommand names, each command's options, option choices, and node names
 * (from `dispatcherctl nodes -q`) for commands whose first argument is a node.
 */
import type { Command, Option } from 'commander';

interface CommandSpec {
  name: string;
  description: string;
  options: { flags: string[]; description: string; takesValue: boolean; choices: readonly string[] | undefined }[];
  /** Its first positional argument is a node name. */
  nodeArg: boolean;
  choices: readonly string[] | undefined;
}

function specOf(c: Command, globals: readonly Option[]): CommandSpec {
  const opts = [...c.options, ...globals];
  const first = c.registeredArguments[0];
  return {
    name: c.name(),
    description: c.description(),
    options: opts
      .map((o) => ({
        flags: [o.short, o.long].filter((f): f is string => !!f),
        description: o.description,
        takesValue: o.required || o.optional,
        choices: o.argChoices,
      }))
      .concat([{ flags: ['--help', '-h'], description: 'show help', takesValue: false, choices: undefined }]),
    nodeArg: !!first && /^nodes?$/.test(first.name()),
    choices: first?.argChoices,
  };
}

function specs(program: Command): CommandSpec[] {
  return program.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => specOf(c, program.options));
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function bashCompletion(program: Command): string {
  const name = program.name();
  const fn = `_${name.replace(/[^a-zA-Z0-9_]/g, '_')}`;
  const cmds = specs(program);
  const cases = cmds
    .map((c) => {
      const valueOpts = c.options.filter((o) => o.takesValue);
      const optCases = valueOpts
        .map(
          (o) =>
            `        ${o.flags.join('|')}) ${o.choices ? `COMPREPLY=( $(compgen -W ${q(o.choices.join(' '))} -- "$cur") )` : 'COMPREPLY=()'}; return ;;`,
        )
        .join('\n');
      const words = c.choices ? c.choices.join(' ') : '';
      return `    ${c.name})
      case "$prev" in
${optCases || '        "") ;;'}
      esac
      if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W ${q(c.options.flatMap((o) => o.flags).join(' '))} -- "$cur") )
      else
        COMPREPLY=( $(compgen -W "${words}${c.nodeArg ? ' $(__lc_nodes)' : ''}" -- "$cur") )
      fi ;;`;
    })
    .join('\n');
  return `# bash completion for ${name}; load it with: source <(${name} completion bash)
__lc_nodes() { ${name} nodes -q 2>/dev/null; }
${fn}() {
  local cur prev i cmd=""
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  for (( i=1; i < COMP_CWORD; i++ )); do
    case "\${COMP_WORDS[i]}" in
      --url|--token|--data-dir) (( i++ )) ;;
      -*) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    case "$prev" in --url|--token|--data-dir) COMPREPLY=(); return ;; esac
    if [[ "$cur" == -* ]]; then
      COMPREPLY=( $(compgen -W ${q(
        program.options
          .flatMap((o) => [o.short, o.long].filter(Boolean))
          .concat(['--help', '--version'])
          .join(' '),
      )} -- "$cur") )
    else
      COMPREPLY=( $(compgen -W ${q(cmds.map((c) => c.name).join(' '))} -- "$cur") )
    fi
    return
  fi
  case "$cmd" in
${cases}
  esac
}
complete -F ${fn} ${name}
`;
}

export function zshCompletion(program: Command): string {
  const name = program.name();
  const cmds = specs(program);
  const esc = (s: string) =>
    s.replace(/\\/g, '\\\\').replace(/'/g, `'\\''`).replace(/:/g, '\\:').replace(/\[/g, '\\[').replace(/\]/g, '\\]');
  const optSpec = (o: CommandSpec['options'][number]) => {
    const value = o.takesValue ? `:value:${o.choices ? `(${o.choices.join(' ')})` : ''}` : '';
    if (o.flags.length > 1) return `'(${o.flags.join(' ')})'{${o.flags.join(',')}}'[${esc(o.description)}]${value}'`;
    return `'${o.flags[0]}[${esc(o.description)}]${value}'`;
  };
  const cases = cmds
    .map((c) => {
      const arg = c.nodeArg
        ? `'*:node:_${name}_nodes'`
        : c.choices
          ? `'1:${c.choices.join('|')}:(${c.choices.join(' ')})'`
          : `'*::argument:_files'`;
      return `    (${c.name})\n      _arguments -s ${c.options.map(optSpec).join(' ')} ${arg} ;;`;
    })
    .join('\n');
  return `#compdef ${name}
# zsh completion for ${name}; load it with: source <(${name} completion zsh)
_${name}_nodes() {
  local -a nodes
  nodes=(\${(f)"$(${name} nodes -q 2>/dev/null)"})
  _describe 'node' nodes
}
_${name}() {
  local curcontext="$curcontext" state line
  typeset -A opt_args
  _arguments -C \\
    ${program.options.map((o) => optSpec({ flags: [o.short, o.long].filter((f): f is string => !!f), description: o.description, takesValue: o.required || o.optional, choices: o.argChoices })).join(' \\\n    ')} \\
    '1:command:->cmds' \\
    '*::arg:->args'
  case $state in
    (cmds)
      local -a commands
      commands=(
${cmds.map((c) => `        '${c.name}:${esc(c.description)}'`).join('\n')}
      )
      _describe 'command' commands ;;
    (args)
      case $line[1] in
${cases}
      esac ;;
  esac
}
compdef _${name} ${name}
`;
}
