"""Convolution algorithms on the canonical problem (see ``jaxconv._canonical``).

Every algorithm has the same signature::

    algo(x, w, *, stride, dilation, groups, precision, acc_dtype) -> out

with ``x`` the already padded, already lhs-dilated input ``(N, *P, C)``, ``w``
the kernel ``(*K, C // groups, O)`` and ``out`` of shape ``(N, *out, O)`` in
``acc_dtype``.  ``out[i] = floor((P[i] - dilation[i]*(K[i]-1) - 1)/stride[i]) + 1``
and is at least 1 (the caller handles empty outputs).  ``"taps"`` also takes
``padding=`` (zero padding it applies itself, without a padded copy of the
input) and ``variant=`` (a formulation, as chosen by ``"auto"``'s rule or by
the opt-in autotuner, ``algorithm="autotune"``: ``autotune.py``).
"""
