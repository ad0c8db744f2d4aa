#!/bin/bash
# A fake terraform for the benchmarks that says when it started, to the microsecond.
#
# First thing, before any work: appends "start <epoch seconds> <command> <pid> <cwd>" to
# $BENCH_TF_TIMES ($EPOCHREALTIME is a bash builtin: no fork, no interpreter start-up, so the
# timestamp is within ~1 ms of the exec). bash's own start-up is the only delay before it.
#
# Mode "fast" (default), for queue_latency.py: init/plan/show answer at once, like a
# successful terraform (init creates .terraform/, plan writes the -out file and exits 2 with
# changes, show prints a plan JSON with one create); apply and anything else go to the
# repository's fake (tests/fakes/fake_terraform.py), which keeps serial and lineage right.
#
# Mode "delegate" (BENCH_TF_MODE=delegate), for log_capture.py: init as above; every other
# command runs the repository's fake (FAKE_TF_SCRIPT applies) as a child and, when it exits,
# appends "end <epoch seconds> <command> <exit code> <cwd>", so the run time of terraform
# itself is known.
#
# BENCH_PYTHON and BENCH_FAKE_TF name the Python and the repository's fake.

times=${BENCH_TF_TIMES:-/dev/null}
cmd=${1:-version}
printf 'start %s %s %s %s\n' "$EPOCHREALTIME" "$cmd" "$$" "$PWD" >> "$times"

if [[ $cmd == init ]]; then
    # Real terraform 1.0.3 creates no .terraform/ for a configuration without providers or
    # modules; tfward's keep_init needs one (see bench/README.md), so the fake makes it.
    mkdir -p .terraform
    echo "Terraform has been successfully initialized!"
    exit 0
fi

if [[ ${BENCH_TF_MODE:-fast} == delegate ]]; then
    "${BENCH_PYTHON:-python3}" "$BENCH_FAKE_TF" "$@"
    rc=$?
    printf 'end %s %s %s %s\n' "$EPOCHREALTIME" "$cmd" "$rc" "$PWD" >> "$times"
    exit $rc
fi

case $cmd in
    plan)
        for arg in "$@"; do
            if [[ $arg == -out=* ]]; then
                printf 'PK-fake-plan-%s-%s' "$EPOCHREALTIME" "$$" > "${arg#-out=}"
            fi
        done
        echo "Plan: 1 to add, 0 to change, 0 to destroy."
        exit 2
        ;;
    show)
        echo '{"format_version": "0.2", "resource_changes": [{"address": "fake_thing.a", "type": "fake_thing", "name": "a", "change": {"actions": ["create"]}}]}'
        exit 0
        ;;
    *)
        exec "${BENCH_PYTHON:-python3}" "$BENCH_FAKE_TF" "$@"
        ;;
esac
