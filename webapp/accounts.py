"""Account pages: Django's password change, answering a refused form with 400 like every other form."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpResponse

from webapp.http import form_status


class PasswordChangeView(auth_views.PasswordChangeView):
    """Linked from the account menu; a wrong old password or a weak new one is a 400 with the reason."""

    def form_invalid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_invalid(form)
        response.status_code = form_status(self.request, form)
        return response
