"""Templates flows and the agent share: sandboxed Jinja2 (``templates``) under limits
(``limits``), URL templates whose values are percent-encoded (``urls``), and the HTTP client
an ``http`` step and an agent's http tool send their requests with (``httpclient``)."""
