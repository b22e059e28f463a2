"""Several documented files that belong together (a config file and the app.py that reads it):
runs app.py in the project directory, as ``python app.py`` would."""

import runpy

runpy.run_path("app.py", run_name="__main__")
