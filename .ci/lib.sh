# Sourced by the .ci scripts: a pinned uv, and a synced project environment.
# Nothing is assumed installed but python3 (>= 3.11) with pip.
set -euo pipefail
UV_VERSION=0.13.9
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
if [ "$(python3 -m uv --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
uv() { python3 -m uv "$@"; }

# sync_env LEG [extra uv args...]: LEG is airflow33 (newest, .venv) or airflow30 (oldest, .venv-airflow30).
sync_env() {
  local leg=$1; shift
  if [ "$leg" = airflow33 ]; then export UV_PROJECT_ENVIRONMENT="$REPO_ROOT/.venv"
  else export UV_PROJECT_ENVIRONMENT="$REPO_ROOT/.venv-$leg"; fi
  uv sync --frozen --quiet --python python3 --no-default-groups --group dev --group "$leg" "$@"
  PY="$UV_PROJECT_ENVIRONMENT/bin/python"
}
