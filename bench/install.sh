#!/usr/bin/env bash
# Installs what the benchmark needs, idempotently: Debian packages when a program is missing,
# and the two peers (pyinfra 3.x, ansible-core 2.19) into bench/.venv from PyPI. Sourced by
# bench/run; prints one line per thing it had to do, nothing when all is there.
set -euo pipefail

BENCH=${BENCH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
VENV=${BENCH_VENV:-$BENCH/.venv}
PYINFRA_SPEC=${PYINFRA_SPEC:-'pyinfra>=3,<4'}
ANSIBLE_SPEC=${ANSIBLE_SPEC:-'ansible-core>=2.19,<2.20'}

# program -> Debian package that provides it. Only missing programs cause an apt-get run.
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "$3" ] || need_pkgs+=("$2"); }
need sshd openssh-server /usr/sbin/sshd
need ssh openssh-client /usr/bin/ssh
need ssh-keygen openssh-client /usr/bin/ssh-keygen
need ip iproute2 /usr/sbin/ip
need iptables iptables /usr/sbin/iptables
need tar tar /bin/tar
need sha256sum coreutils /usr/bin/sha256sum
need git git /usr/bin/git
[ -x /usr/bin/time ] || need_pkgs+=(time)
# The nodes run ansible's modules with the system Python; the venv needs its venv module.
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "install: apt-get install ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
mkdir -p /run/sshd   # sshd refuses to start without its privilege-separation folder

# The peers, pinned to the major versions the benchmark is about. Re-running pip only when
# the venv lacks them keeps a second `bench/run` offline-capable.
if ! "$VENV/bin/python" -c 'import pyinfra, ansible' >/dev/null 2>&1; then
  echo "install: $PYINFRA_SPEC and $ANSIBLE_SPEC into $VENV" >&2
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$PYINFRA_SPEC" "$ANSIBLE_SPEC"
fi
