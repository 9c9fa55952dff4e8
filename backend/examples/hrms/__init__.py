"""The HRMS (seed 002) as a Django project, its tasks run by taskhub.

==============================  ============================================================
``manage.py``, ``project/``     the Django project: settings (``TASKS`` names taskhub's
                                backend, ``DATABASE_URL`` the PostgreSQL), urls
``salaries/``                   the Django app: models, Django migrations, the upload and
                                status views, ``tasks.py`` (``@task`` functions)
``app.py``                      the TaskhubApp: ``taskhub worker --app backend.examples.hrms.app``
``demo.py``                     what ``taskhub up --demo`` prints and prepares for it
==============================  ============================================================

Importing this package imports nothing of Django: ``app.py`` sets Django up.
"""

#: The Django settings module, named here so that importing it sets nothing up.
SETTINGS_MODULE = "backend.examples.hrms.project.settings"
