"""What users hold: ``open_budget``, the ``Budget`` handle and ``Reservation``."""
