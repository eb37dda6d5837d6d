# Usage: zsh -f capture.zsh FPATH_DIR 'command line to complete'
# Runs an interactive zsh in a pty, loads the completion system with FPATH_DIR first in $fpath,
# types the line and a TAB, and prints each candidate the completion function offers (compadd
# is wrapped to print its matches instead of inserting them).
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PROMPT=''; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z "bindkey '^I' complete-word; zstyle ':completion:*' insert-tab false"
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a __hits; builtin compadd -A __hits "$@"
  local h; for h in $__hits; do print -r -- "CAND""=$h"; done
}'
zpty -w z 'comppostfuncs=( _capture_done ); _capture_done () { print -r -- "CAPTURE""-DONE"; exit }'
zpty -w -n z "$2"$'\t'
local line
while zpty -r z line; do
  line=${line%$'\r'}; line=${line%$'\n'}; line=${line%$'\r'}
  [[ $line == *CAPTURE-DONE* ]] && break
  [[ $line == *CAND=* ]] && print -r -- ${line#*CAND=}
done
zpty -d z
