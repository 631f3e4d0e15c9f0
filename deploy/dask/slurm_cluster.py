"""A Dask cluster on SLURM for `biomedica ... --runner DaskRunner`: the scheduler runs in
this process (on the login or a head node), each worker is a SLURM job (dask-jobqueue).

    python deploy/dask/slurm_cluster.py --jobs 8 --cores 16 --memory 64GB \
        --queue cpu --account myproject --walltime 12:00:00 --python ~/biomedica/.venv/bin/python

prints the scheduler's address (and writes it to --address_file), then holds the cluster
until Ctrl-C or --hold_hours. Run the pipeline from another shell with
`--runner DaskRunner --dask_client_address <address>` (deploy/dask/README.md).
"""

from __future__ import annotations

import argparse
import sys
import time


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs, one worker host each")
    parser.add_argument("--cores", type=int, default=8, help="cores per job")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="worker processes per job "
        "(0: one per core, one thread each: the pipeline's DoFns hold the GIL)",
    )
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--queue", default=None, help="partition (#SBATCH -p)")
    parser.add_argument("--account", default=None, help="account (#SBATCH -A)")
    parser.add_argument("--walltime", default="04:00:00", help="time limit of each job")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the Python, on every node, of an environment with the project "
        "installed (pip install -c constraints.txt .)",
    )
    parser.add_argument(
        "--interface",
        default=None,
        help="network interface workers and scheduler talk on (ib0, eth0)",
    )
    parser.add_argument("--local_directory", default=None, help="node-local scratch for workers")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="more #SBATCH lines, e.g. --extra=--gres=gpu:1 (repeatable)",
    )
    parser.add_argument("--address_file", default=None, help="also write the address here")
    parser.add_argument("--hold_hours", type=float, default=24.0, help="stop after this long")
    parser.add_argument("--dry_run", action="store_true", help="print the job script and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Imported here: --help works where dask-jobqueue is not installed.
    from dask_jobqueue import SLURMCluster

    processes = args.processes or args.cores
    cluster = SLURMCluster(
        cores=args.cores,
        processes=processes,
        memory=args.memory,
        queue=args.queue,
        account=args.account,
        walltime=args.walltime,
        python=args.python,
        interface=args.interface,
        local_directory=args.local_directory,
        job_extra_directives=args.extra,
        # The workers' dashboards stay off; the scheduler's is reached by an ssh tunnel.
        worker_extra_args=["--no-dashboard"],
    )
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return 0
    cluster.scale(jobs=args.jobs)
    address = cluster.scheduler_address
    print(address, flush=True)
    if args.address_file:
        with open(args.address_file, "w") as out:
            out.write(address + "\n")
    try:
        time.sleep(args.hold_hours * 3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()  # cancels the worker jobs
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
