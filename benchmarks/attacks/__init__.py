"""The reliability suite's parts (``benchmarks/reliability.py`` runs them).

Measuring: :mod:`.probes` (a process that times a request every 20 ms) and :mod:`.watching`
(probes, memory and shared checks while an attack runs); :mod:`.outcome` (a case's figures,
checks and the report); :mod:`.raw_http` (requests and answers on raw sockets);
:mod:`.servers` (the server a case attacks). The cases, by row of issue 15's table:
:mod:`.framing` (1, 6), :mod:`.decoding` (2, 3), :mod:`.hung_runs` (4), :mod:`.connections`
(5), :mod:`.headers` (7, 8), :mod:`.start_and_stop` (9, 10) and :mod:`.soak`.

Each case is a function ``(outcome, quick, work)`` that fills in ``outcome``. The modules
import ``serving`` and ``tests`` from the repository root, which must be on ``sys.path``
(``reliability.py`` puts it there; pytest does too).
"""
