"""The conformance suite, installed with the package: ``python -m pytest --pyargs xpsoftmax``
(or ``python -m xpsoftmax test``) runs it on every array library and device this machine has."""
