"""Reading and validating lab files. Kinds defined outside models.py register here."""
from netemu.spec import metallb as _metallb

_metallb.register()
