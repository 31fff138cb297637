"""Reading and validating lab files. Kinds defined outside models.py register themselves when
models.py is loaded (see its end), so that importing a light module of the package (registry,
errors) loads no pydantic."""
