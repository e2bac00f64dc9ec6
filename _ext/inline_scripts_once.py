"""Write each <script> of a page once.

Sphinx 7.4 lists an inline script that an extension registers after the builder has
started twice in a page's ``script_files``; sphinx-thebe's ``const THEBE_JS_URL = ...``
then runs twice and throws "Identifier 'THEBE_JS_URL' has already been declared" on
every page. jupyter-book 1.x pins Sphinx 7, so the duplicates are dropped here.
"""


def scripts_once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files", [])
    seen, unique = set(), []
    for script in scripts:
        # the two copies differ only in filename: None in one, "" in the other
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: it is the builder's own list, which later handlers may extend


def setup(app):
    # last among the handlers, so that scripts added by other extensions' handlers are seen too
    app.connect("html-page-context", scripts_once, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
