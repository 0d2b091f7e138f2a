"""The web UI of ``inr-smooth ui``.

* :mod:`.hosts` -- the hosts offered, as declarative entries (form fields and the API call);
* :mod:`.samples` -- synthetic sample clips, and captions read back as scenes;
* :mod:`.jobs` -- form values to configs, previews, running a job, errors as one line;
* :mod:`.scoring` -- the metric table;
* :mod:`.app` -- the Gradio layout (the only module that imports Gradio).

Everything but :mod:`.app` is plain Python, tested without a browser.
"""
