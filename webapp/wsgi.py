"""
WSGI config for webapp project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application

from webapp.tensorflow_logs import quiet_tensorflow

# Files the web server writes (uploads, sessions in SQLite, DATA_DIR itself) are for the service
# account alone, also when a WSGI server is started without manage.py; set before the settings load.
os.umask(0o077)
quiet_tensorflow()  # no TensorFlow start-up notes in the server log
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

application = get_wsgi_application()
