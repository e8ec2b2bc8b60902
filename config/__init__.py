"""The default configuration files, installed as the package ``oncoagent_config`` (see pyproject.toml).

``oncoagent.yaml`` (the defaults, spelled out), ``oncoagent.production.yaml`` (an annotated production example)
and ``radiomics.yaml`` (pyradiomics' parameter file). Code finds them with
``importlib.resources.files("oncoagent_config")``, in a checkout and in an installed wheel alike.
"""
