"""The manual's generated parts: the recipe reference, the command reference, the index of user
errors, the results tables and the parts of hand-written pages the code can say (the layers and
modules of docs/architecture.md, the README's demo table).

``python tools/make_docs.py`` rebuilds them all (:func:`.pages.main`); ``--check`` lists the pages
that differ from what it would write, and tests/test_docs.py fails on them. :mod:`.links` checks
that every relative link and anchor of the Markdown pages resolves. It documents every layer, so
it sits above them all, the ``cli`` entry point included.

May import: every layer (it documents them all).
"""
