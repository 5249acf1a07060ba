"""The conformance suite: one model of the specification, one set of Hypothesis rules,
run against every store, through the Store protocol and through the public API.

* ``model.py``: the budget as the specification describes it (plain lists and dicts);
* ``strategies.py``: caps, windows, amounts and instants;
* ``machine.py``: the rules and the checks after every step, for any driver;
* ``drivers.py``: ``ProtocolDriver`` (``store.open`` / ``store.apply`` batches, as the
  actor) and ``ApiDriver`` (``treasurer.sync.open_budget(store=..., clock=...)``);
* ``stores.py``: the stores every test runs against. A new store is one line there.

``test_store_protocol.py`` and ``test_public_api.py`` run the machine for every store,
with the event loop on asyncio and on trio. For a longer search, raise ``max_examples``
in their ``SETTINGS`` (or pass ``--hypothesis-seed`` to explore elsewhere).
"""
