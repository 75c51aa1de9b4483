# tests/python/test_docs.py — the examples of docs/python.md run: every
# ```python block, in order, in one namespace, against the test server
# (the page's http://127.0.0.1:8080 replaced by its URL), so the page
# stays true to what the package does.
import contextlib
import io
import os
import re
import uuid


def blocks(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)


def test_the_examples_of_docs_python_md_run(server, srcdir):
    path = os.path.join(srcdir, "docs", "python.md")
    code = blocks(path)
    assert len(code) >= 4, "docs/python.md has lost its examples"
    base = "%s/doc-%s" % (server, uuid.uuid4().hex[:8])
    ns = {}
    out = io.StringIO()
    for i, block in enumerate(code):
        src = block.replace("http://127.0.0.1:8080", base)
        with contextlib.redirect_stdout(out):
            exec(compile(src, "%s block %d" % (path, i + 1), "exec"), ns)
    printed = out.getvalue()
    assert "stored generation 1" in printed
    assert "conflict:" in printed
