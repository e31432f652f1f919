"""Submit a training run to SLURM through submitit (or run it here with --local, or print the sbatch script).

    python launch/submit.py --nodes 2 --method walk_superpixel [--gpus-per-node 8 --partition gpu --time 1440]
        [key=value ...]
    python launch/submit.py --local --method walk_superpixel train.steps=20      # this machine, same code path
    python launch/submit.py --nodes 2 --method moco --dry-run                    # print the sbatch script only

The same command as the installed ``ssl-video-submit``; the launcher is ``ssl_video/launch.py`` (``--help``).
"""

import sys

from ssl_video.launch import main

if __name__ == "__main__":
    sys.exit(main())
