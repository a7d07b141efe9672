"""
WSGI config for webapp project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application

# Files the web server writes (uploads, sessions in SQLite, DATA_DIR itself) are for the service
# account alone, also when a WSGI server is started without manage.py; set before the settings load.
os.umask(0o077)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

application = get_wsgi_application()
