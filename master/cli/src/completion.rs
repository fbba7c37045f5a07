//! `bramble completion bash|zsh|fish`: clap_complete's scripts for the commands and flags, plus,
//! for bash and fish, object names completed from the cluster (`bramble get KIND -o name`) after
//! `get|describe|delete|edit KIND`, `logs` (pods) and `rollout ... deployment`.

use std::io::Write;

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    /// bash (`source <(bramble completion bash)`).
    Bash,
    /// zsh (`bramble completion zsh > "${fpath[1]}/_bramble"`).
    Zsh,
    /// fish (`bramble completion fish > ~/.config/fish/completions/bramble.fish`).
    Fish,
}

/// bash: object names for the word after a kind, else clap's completion.
const BASH_NAMES: &str = r#"
_bramble_names() {
    local cur="${COMP_WORDS[COMP_CWORD]}" sub="${COMP_WORDS[1]}" kind=""
    case "$sub" in
        get|describe|delete|edit|scale)
            [ "$COMP_CWORD" -eq 3 ] && kind="${COMP_WORDS[2]}" ;;
        logs)
            [ "$COMP_CWORD" -eq 2 ] && kind=pods ;;
        rollout)
            [ "$COMP_CWORD" -eq 4 ] && kind="${COMP_WORDS[3]}" ;;
    esac
    if [ -n "$kind" ] && [ "${cur#-}" = "$cur" ]; then
        local names
        names="$("${COMP_WORDS[0]}" get "$kind" -o name 2>/dev/null | sed 's|^[^/]*/||')"
        COMPREPLY=($(compgen -W "$names" -- "$cur"))
        return 0
    fi
    _bramble "$@"
}
complete -F _bramble_names -o bashdefault -o default bramble
"#;

/// fish: object names after a kind.
const FISH_NAMES: &str = r#"
function __bramble_names
    set -l w (commandline -opc)
    if test (count $w) -eq 3; and contains -- $w[2] get describe delete edit scale
        bramble get $w[3] -o name 2>/dev/null | string replace -r '^[^/]*/' ''
    else if test (count $w) -eq 2; and test "$w[2]" = logs
        bramble get pods -o name 2>/dev/null | string replace -r '^[^/]*/' ''
    end
end
complete -c bramble -f -a '(__bramble_names)'
"#;

/// Writes the script for `shell`.
pub fn write(shell: CompletionShell, out: &mut impl Write) {
    let mut cmd = super::Cli::command();
    let (sh, extra) = match shell {
        CompletionShell::Bash => (Shell::Bash, BASH_NAMES),
        CompletionShell::Zsh => (Shell::Zsh, ""),
        CompletionShell::Fish => (Shell::Fish, FISH_NAMES),
    };
    clap_complete::generate(sh, &mut cmd, "bramble", out);
    let _ = out.write_all(extra.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_the_commands() {
        for sh in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let mut v = Vec::new();
            write(sh, &mut v);
            let s = String::from_utf8(v).unwrap();
            assert!(s.contains("rollout") && s.contains("completion"), "{sh:?}");
        }
    }
}
