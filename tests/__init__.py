"""The test suite. Its folders mirror the packages (``tests/<package>/<sub-package>/``); the shared
fixtures and helpers stay here: ``conftest`` (real data under ../shared/data, offline hub),
``_datasets`` (synthetic datasets written with the real writer), ``_http`` (a Range-honouring
server), ``_pretrain`` (tiny trainer configs).
"""
