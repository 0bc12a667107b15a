"""The same app for a gunicorn you run yourself (``gunicorn_conf.py`` has the rest):

cd examples/flask_byo && SAGEMAKER_BASE_DIR=/opt/ml gunicorn -c gunicorn_conf.py wsgi:application
"""

from predictor import app

from serving.flask_integration import mount

#: ``/ping``, ``/invocations`` and ``/execution-parameters`` answered by the server's app,
#: built from the SAGEMAKER_* and SERVING_* variables; every other path by ``app``.
application = mount(app)
