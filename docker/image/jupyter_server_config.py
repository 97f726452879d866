# JupyterLab in the notebook container (Dockerfile target notebook, compose service notebook).
# Compose publishes the port on 127.0.0.1 only; inside the container it must listen on all interfaces.
import os

c = get_config()  # noqa: F821  (Jupyter's config loader provides it)

# An empty JUPYTER_TOKEN would turn authentication off: refuse to start instead.
if not os.environ.get("JUPYTER_TOKEN"):
    raise SystemExit("JUPYTER_TOKEN is empty: make notebook writes one into .env (docs/notebook.md)")
c.IdentityProvider.token = os.environ["JUPYTER_TOKEN"]
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/app/notebooks"
# The address it prints is the container's; make notebook prints the host's.
c.ServerApp.custom_display_url = ""
