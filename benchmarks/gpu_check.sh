#!/usr/bin/env bash
# The prepared GPU check (benchmarks/GPU.md). On the GPU machine, from the repository root:
#
#     bash benchmarks/gpu_check.sh [gpu_check.py options]
#
# installs the carried wheels (.whl/, from benchmarks/prepare_gpu_wheels.sh) and ssl-bench itself
# into a private site folder -- the machine has no internet, so pip never looks beyond .whl/ -- and
# runs benchmarks/gpu_check.py. With --dry-run nothing is installed: the check runs on the CPU with
# the current environment (what tests/test_gpu_check.py does). PYTHON picks the interpreter
# (default python3); SSL_BENCH_SITE the install folder (default $TMPDIR/ssl-bench-site);
# SSL_BENCH_INSTALL=link skips pip for ssl-bench and links the source tree (the fallback when pip
# cannot build it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
dry=0
for arg in "$@"; do [[ $arg == --dry-run ]] && dry=1; done

if [[ $dry == 0 ]]; then
    site=${SSL_BENCH_SITE:-${TMPDIR:-/tmp}/ssl-bench-site}
    mkdir -p "$site"
    pip_target=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check
                --upgrade --target "$site")
    shopt -s nullglob
    wheels=(.whl/*.whl)
    if ((${#wheels[@]})); then
        echo "gpu_check.sh: installing ${#wheels[@]} carried wheel(s): ${wheels[*]##*/}"
        "${pip_target[@]}" "${wheels[@]}" || echo "gpu_check.sh: warning: installing the wheels failed" >&2
    else
        echo "gpu_check.sh: warning: no wheels in .whl/ (run benchmarks/prepare_gpu_wheels.sh and carry .whl)" >&2
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # ssl-bench itself: the plugins are found through the entry points of the installed distribution
    if [[ ${SSL_BENCH_INSTALL:-pip} == link ]] || ! "${pip_target[@]}" --no-build-isolation . >/dev/null; then
        # no build backend there: point the site folder at the source tree and write the
        # distribution's metadata (name, version, entry points) by hand
        echo "gpu_check.sh: linking the source tree as ssl-bench (pip not used or could not build it)" >&2
        rm -rf "$site"/ssl_bench "$site"/ssl_bench_plugins "$site"/ssl_bench-*.dist-info
        ln -s "$PWD/ssl_bench" "$site/ssl_bench"
        ln -s "$PWD/plugins" "$site/ssl_bench_plugins"
        dist="$site/ssl_bench-0.1.0.dist-info"
        mkdir -p "$dist"
        printf 'Metadata-Version: 2.1\nName: ssl-bench\nVersion: 0.1.0\n' >"$dist/METADATA"
        "$PY" - "$dist/entry_points.txt" <<'EOF'
import sys, tomllib
points = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]["ssl_bench"]
open(sys.argv[1], "w").write("[ssl_bench]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
EOF
    fi
    "$PY" -c "import mmengine, ssl_bench, importlib.metadata as m; print('gpu_check.sh: ssl-bench', m.version('ssl-bench'), 'from', ssl_bench.__file__)" \
        || echo "gpu_check.sh: warning: ssl-bench does not import; every part will report it" >&2
    export SSL_BENCH_GPU_CHECK_WRAPPER=1
fi
exec "$PY" benchmarks/gpu_check.py "$@"
