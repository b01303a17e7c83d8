"""Background work on a named channel: thumbnails made by a worker, not in the request.

A view queues a job (``POST /api/thumbnail/``) and answers at once; a worker consuming the
named channel ``thumbnails`` makes the image and stores it. Run that work on its own
processes with ``switchboard worker thumbnails``. See docs/background-tasks.md.
"""
