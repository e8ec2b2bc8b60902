"""Fuzzing harnesses for what the SCP parses from peers: DIMSE command sets and whole association streams.

Two harnesses, both in ``make test`` with bounded counts:

- ``tests/fuzz/test_dimse_properties.py`` — hypothesis properties over :func:`dicom_node.dimse.read_command`
  and :func:`dicom_node.dimse.response`: arbitrary bytes and mutated well-formed command sets give a
  ``Command`` or ``CommandError``, never anything else, within a deadline, and every command read can be
  answered. Strategies: :mod:`tests.fuzz.command_sets`.
- ``tests/integration/test_scp_fuzz.py`` — thousands of mutated association streams
  (:mod:`tests.fuzz.streams`, a seeded generator) against a running ``StorageSCP``; after each batch a
  well-formed C-ECHO must succeed within 2 s; at the end no thread, file descriptor or stored file is left over
  and nothing was logged as an exception.

Running them longer (the environment variables are read by :mod:`tests.fuzz.budget`)::

    ONCOAGENT_FUZZ_EXAMPLES=200000 tests/run-isolated.sh .venv/bin/python -m pytest -q tests/fuzz \\
        -p no:cacheprovider --timeout 0
    ONCOAGENT_FUZZ_BATCHES=2000 ONCOAGENT_FUZZ_SEED=$RANDOM \\
        tests/run-isolated.sh .venv/bin/python -m pytest -q tests/integration/test_scp_fuzz.py --timeout 0

``ONCOAGENT_FUZZ_EXAMPLES`` sets hypothesis' ``max_examples`` per property (default 300);
``ONCOAGENT_FUZZ_BATCHES`` the live test's batches of 100 streams (default 50); ``ONCOAGENT_FUZZ_SEED`` its
seed (default fixed, printed on failure, so a failure reproduces with the same seed). Hypothesis keeps the
failing examples it found in ``.hypothesis/`` and replays them first on the next run.
"""
