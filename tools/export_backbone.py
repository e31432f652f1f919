"""Export a trained backbone: ``python tools/export_backbone.py CHECKPOINT OUT.pt [--no-fc] [--num-classes N]``.

The same command as the installed ``ssl-video-export``; the code (and the loading rules) is ``ssl_video/export.py``.
"""

from ssl_video.export import ExportError, convert, export, load_model, main  # noqa: F401  (the script's API)

if __name__ == "__main__":
    raise SystemExit(main())
