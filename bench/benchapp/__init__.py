"""The database part of the HTTP benchmark, shared by every site (Switchboard, Channels, plain Django).

One table of ``ROWS`` rows with a unique index (:mod:`benchapp.models`), one view that
reads one row through the ORM (``GET /db/``, :mod:`benchapp.views`), the ``DATABASES``
setting each kind of server is deployed with (:mod:`benchapp.database`) and the step that
creates and fills the table before a run (``python -m benchapp.prepare``).
"""
