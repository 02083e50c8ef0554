"""Profiles: every tuning constant of the ``"auto"`` plan, in one record.

A :class:`Profile` is a frozen record of the thresholds the plan
(``jaxconv.algorithms.plan``) compares a problem against: how many kernel
taps are unrolled before a loop takes over, how large a temporary may grow
before the work is cut into blocks, from how many taps a long 1-D depthwise
kernel becomes GEMMs, and so on.  Nothing else in the library holds a tuning
constant, so moving jaxconv to another machine is a matter of another
profile.

Presets are named after the backends: ``"cpu"``, ``"gpu"`` and ``"tpu"``.
The active profile is, in order of precedence:

1. the one set by :func:`use_profile` (a context manager; thread- and
   task-local), e.g. to plan for another platform when exporting;
2. the preset named by the environment variable ``JAXCONV_PROFILE``;
3. the preset of ``jax.default_backend()``.

The ``cpu`` constants were measured on 2-core x86-64 hosts (the figures are
in BENCHMARKS.md).  The ``gpu`` and ``tpu`` presets keep the ``cpu`` rule's
thresholds where they are about arithmetic (unrolling, channel counts) and
change what a GPU or TPU runs differently: no conditionals, no
cache-sized loops, plain autodiff for kernel gradients, exact depthwise
GEMMs (the comment at ``PRESETS``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
from collections.abc import Iterator

import jax

_MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Profile:
    """The tuning constants of one platform (hashable: a jit static argument).

    Attributes:
      name: the preset this profile derives from (``"cpu"``, ``"gpu"``,
        ``"tpu"``).
      family: for the ``cpu`` preset, the CPU family whose table of
        constants it carries (``"avx2"`` or ``"avx512"``, see
        :func:`cpu_family`); empty for the accelerator presets.
      unroll_limit: kernels with more taps than this run their taps in a
        ``lax.scan`` (bounded compile time) instead of unrolled.
      outer_max_i: dense stride-1 kernels on at most this many input
        channels (a grayscale or mono input layer, or the input gradient of
        a one-output layer) run per-tap products (``"taps"``): with one
        input channel each tap is an outer product, which XLA fuses with
        the others into one elementwise loop, where the patch matrix's GEMM
        of depth ``T`` runs far below the GEMM rate (a U-Net's 1 -> 64
        input layer at batch 8: 0.4-0.5x of lax's speed as ``"im2col"``,
        1.6-2.3x as per-tap products; with 2 or 3 input channels the
        products are GEMMs again and lose; HiFi-GAN's one-output 1-D layer
        at batch 8: gradient 0.48 -> 1.5 of lax's speed).  Their kernel
        gradient is the patch form's one GEMM.
      im2col_max_i: dense kernels of rank >= 2 on at most this many input
        channels (an RGB stem) build the patch matrix (``"im2col"``).
      alltaps_max_bytes: a dense stride-1 kernel whose all-tap GEMM output
        fits in this many bytes runs ``"alltaps"`` unblocked.
      alltaps_whole_scale: ... a 1-D one up to this multiple of it: one
        GEMM and one fused shifted sum, where row blocks and per-tap GEMMs
        each pay XLA:CPU's cost per GEMM call (on a 2-core Intel Xeon, 8
        GEMMs of 4096 x 96 x 32 ran 2.9x slower than the one GEMM of their
        32768 rows).  On the ``avx512`` table 8 (16 MiB): the 36 HiFi-GAN
        residual-block records it changes (32-256 channels, 3-11 taps,
        batch 1 and 8) ran forward 0.96-1.47x the speed before (geomean
        1.24), their gradients 0.89-1.18x (geomean 1.07).  Past that size
        (29-46 MB, near the 32 MiB at which XLA maps temporaries afresh on
        every call) the one GEMM lost up to 2.5x: there 1-D layers run it
        in a loop over groups of taps whose products fit the size
        (``plan._alltaps_tap_groups``), and 2-D layers ``"wide"`` in a loop
        over the kernel rows where one row's do (``plan._wide_row_loop``).
        Those bytes come out of the memory rule's workspace.  8 on both
        CPU families (first on ``avx512`` only; on a 2-core AMD EPYC the
        HiFi-GAN forwards it changes ran 1.04-1.10x as fast, geomeans over
        54 records in two A/B runs); 1 on accelerators.
      wide_min_width: beyond ``alltaps_max_bytes``, 2-D stride-1 kernels
        with at least this many output columns ...
      wide_2d_max_i: ... or on at most this many input channels run one
        GEMM per row of taps over whole padded rows (``"wide"``, in row
        blocks): no patch matrix, and the padding columns it multiplies are
        a small part of such a row.  On a U-Net's 64-wide layers (64 and
        128 channels) this ran forward 0.9-1.2x -> 1.2-1.4x of lax's speed
        and the gradient up to 1.6x faster than the all-tap GEMM or the
        patch matrix; at 32 columns it lost to the patch matrix from 128
        channels on (BENCHMARKS.md).
      alltaps_max_i: narrower 2-D stride-1 kernels on at most this many
        input channels run ``"alltaps"`` in row blocks; wider ones build
        patches (``"im2col"``).
      kernel_bound_ratio: a dense stride-1 kernel of more than this many
        times the input's bytes is *kernel-bound* (few positions, many
        channels: its GEMMs stream the weights) ...
      cache_patch_bytes: ... and builds its patch matrix (``"im2col"``, one
        GEMM) when that fits in this many bytes, and runs per-tap GEMMs
        (``"taps"``, each reading its tap's weights in place) when it does
        not (2-D and 3-D; 1-D kernels then follow the 1-D rules); the
        all-tap GEMM would first copy the whole kernel into ``(I, T*O)``
        order.  (HiFi-GAN's 16-frame 80 -> 512 input layer at batch 8:
        forward 0.35 -> 0.73 of lax's speed as the patch matrix.)  At 512
        KiB (a core's L2 cache) instead of 2 MiB, the 32 zoo records whose
        plan this changes ran forward 2.07x and gradient 1.82x of lax's
        speed (geomean) against 2.45x and 2.14x: one deep GEMM of a few
        hundred rows beats nine shallow ones even from L3 (U-Net
        ``down2.conv1`` at batch 1, 128 -> 256 on 16x16: forward 0.53 ->
        1.04); at 4 MiB the U-Net's 1024 -> 512 ``up1.conv1`` lost forward
        1.19 -> 0.37.
      kernel_bound_scan: those per-tap GEMMs run in a ``lax.scan`` over the
        taps (one tap's input and weight slices live at a time).  Unrolled,
        XLA:CPU kept every tap's slices live together (67 MB for the 3-D
        U-Net's 768 -> 256 3x3x3 layer at batch 8) and the kernel gradient,
        the transpose of 27 separate GEMMs, ran at a quarter of the scan's
        rate; over the 52 zoo records this changes, forward 1.78 -> 1.97
        and gradient 1.41 -> 1.63 of lax's speed (geometric means).
      rows_max_i: 1-D stride-1 dense kernels (beyond ``alltaps_max_bytes``)
        on at most this many input channels concatenate their taps along
        channels (``"rows"``); 0: never.
      wide_max_i: up to this many, one GEMM against all taps (``"wide"``,
        in row blocks); beyond, per-tap GEMMs over row blocks
        (``"shifted"``).
      taps_min_i: from this many input channels on (checked first), per-tap
        GEMMs on the padded input (``"taps"``, unblocked): deep enough to
        run near the GEMM rate, with no GEMM over the padding the row-block
        forms multiply.  On a HiFi-GAN stack (``cpu`` preset: ``rows`` never,
        ``wide`` below 256 channels, ``taps`` from 256) this, with
        ``tap_gemm_kernel_tangent``, lifted the forward geomean of its 84
        layer x batch records from 0.79 to 0.85 of lax's speed, against
        ``shifted`` everywhere (BENCHMARKS.md).
      tap_loop_min_i: 1-D dense stride-1 kernels (beyond
        ``alltaps_max_bytes``, checked before ``taps_min_i``) on at least
        this many input channels ...
      tap_loop_min_taps: ... and with at least this many taps run their
        per-tap GEMMs in a ``lax.scan`` over the taps (``"taps"``, one loop
        step per tap): unrolled, XLA:CPU keeps every tap's slice and product
        live (48 MB for 11 taps on 8 x 1024 x 128, past the 32 MiB at which
        temporaries are mapped afresh on every call), and ``wide`` sums
        ``T`` times wider partial outputs.  HiFi-GAN's 1024 x 128 layers at
        batch 8: forward 0.53-0.74 -> 0.83-0.87 of lax's speed.
      s2d_max_i: strided 1-D dense kernels on fewer input channels fold the
        stride phases into channels (``"s2d"``).
      block_io_fraction: a row block's temporaries may take this fraction of
        the ``2 x (input + kernel + output)`` memory bound ... (the kernel
        counted rather than left out: on the 16 zoo and suite records whose
        blocks grew, forward 1.07 -> 1.18 and gradient 1.51 -> 1.57 of
        lax's speed, geomean; ResNet's 128-channel 3x3 on 8x8 at batch 8
        ran blocks of one output row, 64 GEMM rows over the batch, and now
        of two; ``atrous`` forward 0.83 -> 0.90) ...
      block_min_bytes: ... but at least this many bytes ...
      block_max_bytes: ... and at most this many (cache-sized blocks).
      im2col_unblocked_max_bytes: ``im2col`` whose whole patch matrix takes
        at most this many bytes, and no more than the conv's input, kernel
        and output together (the memory rule), builds it at once, in no row
        blocks: one GEMM, where the blocks' loop and per-block copies cost
        more than the cache they save (12 zoo layers, RGB stems at batch 8
        and small late layers: forward 1.09 -> 1.33, gradient 1.61 -> 2.24
        of lax's speed, geometric means).
      im2col_2d_unblocked_max_bytes: ... and 2-D ``im2col`` whose patch
        matrix takes at most this many bytes builds it whole where it fits
        the memory rule's room, ``2 x (input + kernel + output)``, though it
        outgrows their sum (a stride-2 RGB stem: 7x7x3 patches at a quarter
        of the positions, 1.9x).  Its two-stage patch build (last axis
        first) streams, where the row blocks' loop and copies cost more
        than the cache they save.  On a 2-core Intel Xeon (``avx512``: 16
        MiB), the 9 zoo and suite layers it changes (forward / gradient):
        RGB stems at batch 8 1.48-1.58x / 1.26-1.33x faster, at batch 1
        1.03-1.09x / 1.39-1.43x, ``stem`` 1.49-1.56x / 1.24-1.26x, two
        ResNet 3x3 layers 0.96-1.04x / 0.98-1.15x.  The same on both CPU
        families (0, off, on accelerators); with ``im2col_2d_whole_min_o``
        see below.
      im2col_2d_whole_min_o: dense 2-D layers (one group, 2 to
        ``unroll_limit`` taps; strided, or stride 1 on more than
        ``outer_max_i`` input channels, not kernel-bound and past the
        unblocked all-tap size) with at least this many output channels run
        ``im2col`` with the patch matrix built whole wherever it takes at
        most ``im2col_2d_unblocked_max_bytes``, beyond the room above (the
        bytes come out of the memory rule's workspace), ahead of the
        ``wide``, ``shifted`` and per-tap forms: one GEMM of depth ``T * I``
        over every output position, where those forms run several GEMMs
        (per tap or per row block) and a shifted sum over ``T`` times the
        output, each GEMM paying XLA:CPU's cost per call.  Few output
        channels leave the GEMM too little work per patch byte (a 64 -> 3
        input gradient ran 2.5x slower); below the all-tap size ``alltaps``
        is one GEMM already (and a 16-layer 32-channel stack compiled 2.3x
        slower as ``im2col``).  On a 2-core Intel Xeon (``avx512``: 32), the
        13 zoo and suite records it changes (3x3 layers of 64-256
        channels) ran forward 0.93-1.54x as fast as before (geomean 1.20;
        ResNet's 64-channel layers at batch 8 1.50-1.54x, ``dense3`` 1.20x,
        ``atrous`` 1.26x), gradients 0.98-1.33x (1.08); train steps:
        ResNet-18 1.17x, MobileNetV2 1.03x, ConvNeXt-T 1.02x, the Flax U-Net
        0.94-1.09x over five runs, the Equinox U-Net 1.07x.  32 on both CPU
        families (first on ``avx512`` only; on a 2-core AMD EPYC the 2-D
        records the two fields change ran 1.04-1.17x as fast, geomeans by
        form and direction in two A/B runs); off (``1 << 62``) on
        accelerators.
      grouped_max_i: grouped kernels with at most this many input channels per
        group run as fused broadcast multiply-adds (``"grouped"``) ...
      grouped_max_terms: ... when they also have at most this many terms
        ``T * I`` per output (XLA:CPU compiles longer sums into a loop 3-20x
        slower: 3x3 kernels ran 1.3x lax at 12 channels per group, 0.4x at
        14, 0.1x at 16); other grouped kernels are GEMMs batched over groups
        (``"groupgemm"``).
      grouped_rule_max_terms: the grouped kernel-gradient rule keeps one scan
        carry per tap and input channel; beyond this many, plain autodiff.
      grouped_rows_min_terms: grouped sums of at least this many terms
        ``T * I`` (stride 1 along the first spatial axis, rank >= 2) run as a
        ``lax.scan`` over kernel rows, each step one fused loop of a row's
        terms (``form="rows-scan"``): XLA:CPU runs a loop of 72 broadcast
        multiply-adds per output about half as fast per term as one of 24
        (on a 2-core AMD EPYC, ``group32`` forward 1.14-1.30x as fast and
        its gradient 1.04-1.09x in three A/B runs).  Shorter sums stay one
        loop: the carry's extra pass over the output cost more (36 terms of
        a 56 x 56 ResNeXt layer ran 3-4x slower as rows), as did depthwise
        kernels as rows (ConvNeXt's 7 x 7: 2-6x slower).  The same on both
        CPU families (not yet measured on an AVX-512 host).
      pad_in_loop_max_taps: depthwise kernels of at most this many taps apply
        the zero padding inside the fused loop; larger ones pad once.
      toeplitz_min_taps: 1-D depthwise kernels with at least this many taps
        become blocked Toeplitz GEMMs (``"toeplitz"``).
      toeplitz_block: the Toeplitz block size ``B``.
      hankel_min_taps: from this many taps the Toeplitz product is one
        block-Hankel GEMM per channel instead of a scan over kernel blocks.
      fft_min_taps: 1-D depthwise kernels (real, 32 or 64 bits) with at least
        this many taps are a product of FFTs when every input and weight is
        finite, the exact depthwise loop otherwise (``"spectral"``; needs a
        conditional, so the branch-free profiles turn it off).
      phase_gemm_max_taps: a transposed-conv phase with at most this many taps
        is one GEMM against all of them; more build phase patches.
      phase_depth_to_space: a dense transposed conv whose kernel equals its
        stride (every phase one tap over the whole input: U-Net's 2x2
        stride-2 upsampling) and is at most ``kernel_bound_ratio`` times
        the input's bytes is one GEMM against every phase's tap, then a
        transpose interleaving the phases, instead of one GEMM per phase.
      phase_one_gemm_max_bytes: a dense transposed conv whose every tap's
        product with the real inputs (``N * prod(n) * T * O`` values) is at
        most this many bytes computes them in one GEMM, each phase then a
        sum of slices of it (``polyphase.one_gemm_applies``); 0 never.
      phase_taps_kernel_grad_min_positions: the kernel gradient of a
        transposed conv whose phases build patches (float weights,
        ``"im2col|gemm"``: 4x4 stride 2) over at least this many input
        positions (``N * prod(S)``) is the transpose of per-tap products
        (``kernel_grad="taps"``, ``polyphase.kernel_grad_by_taps``); below,
        the transpose of the phases' patch GEMMs, which builds the patches
        again, when the cotangent is finite (else the taps).  On a 2-core
        Intel Xeon (interleaved A/B of the kernel gradient, 16 layers of
        4x4 stride 2): 1.01-1.94x faster from 1024 positions on (the
        suite's ``tconv2d`` at batch 8, 64 -> 32 channels on 32x32: 26.9
        -> 13.9 ms; at batch 1 1.20-1.29x), 0.99-1.15x at 512, 0.42-0.87x
        at 64-256.
      workspace_bytes: the temporaries a conv may use beyond the
        ``2 x (input + output)`` bound (``JAXCONV_WORKSPACE_MB`` overrides).
      branch_free: guard NaN/Inf locality without conditionals (a
        conditional on GPU/TPU is a host round trip).
      tap_gemm_kernel_tangent: the kernel gradient of a 1-D dense stride-1
        conv on one image runs one 2-D GEMM per tap on row ranges of the
        image (``kernel_tangent="tap-gemms"``) instead of the patch form's
        GEMM (or autodiff of per-tap GEMMs on ``(1, L, I)`` arrays) ...
      tap_gemm_min_rows: ... when it has at least this many output rows.
      tap_scan_min_o: the kernel gradient of a 1-D dense stride-1 conv on
        a batch of images (or one image of at least ``tap_gemm_min_rows``
        output rows) with at least this many output channels is a scan
        over the taps, one 2-D GEMM per tap of its rows of every image with
        the cotangent (``kernel_grad="tap-scan"``); on HiFi-GAN's layers at
        batch 8 the kernel gradient ran 1.15-2.8x faster than the patch
        form's GEMM per row block on four of five shapes (0.84x with 11
        taps on 64 channels), and the whole gradient of its 38 batch-8
        layers went from 0.53 to 0.71 of lax's speed (geomean;
        BENCHMARKS.md); at batch 1 its 2048-4096-row layers' kernel
        gradient went from 0.62-0.99 to 0.97-1.20.
      tap_scan_transpose_min_i: from this many input channels the tap scan
        transposes the padded input once and runs each tap as a plain GEMM
        ``(I, N * L) @ (N * L, O)`` (``dense.kernel_grad_tap_scan``).
      hankel_kernel_grad_min_tap_channels: a 1-D kernel gradient the tap
        scan would run, with at least this many taps times input channels
        (``T * I``) ...
      hankel_kernel_grad_min_i, hankel_kernel_grad_max_i: ... and between
        these many input channels, is one block-Hankel GEMM instead
        (``kernel_grad="hankel"``, ``dense.kernel_grad_hankel``): the output
        positions (of each dilation phase) cut into blocks of the first of
        ...
      hankel_kernel_grad_blocks: ... these lengths that cuts them into whole
        blocks, else the first (the cotangent padded, under a guard).  The
        per-tap GEMMs of few channels, ``(I, N * L) @ (N * L, O)``, ran at
        40-50 GFLOP/s on the Intel Xeon host; the one GEMM, at
        ``(B + T - 1) / T`` times their multiplies (fewer taps, more
        waste), took the whole gradient of HiFi-GAN's layers of 64
        channels and 7 or 11 taps 1.4-1.7x faster at batch 8 (1.1-1.5x at
        batch 1), of 32 channels and 11 taps 1.1-1.3x, dilated or not
        (BENCHMARKS.md); 32 channels and 7 taps 0.9-1.1x, 128 channels
        0.9-1.1x, 256 channels 0.8x, 3 taps no faster.  352 on both CPU
        families (first on ``avx512`` only; on a 2-core AMD EPYC the 18
        HiFi-GAN gradients it takes ran 1.11-1.12x as fast, geomeans of
        two A/B runs); off on accelerators.
      tap_scan_nd_min_rows: the kernel gradient of a 2-D/3-D dense stride-1
        conv is the same scan of per-tap GEMMs when it has at least this
        many output positions over the batch (``N * prod(out)``) ...
      tap_scan_nd_min_i: ... at least this many input channels ...
      tap_scan_2d_min_io: ... and, in 2-D, per-tap products of at least
        this many values (``I * O``); on the 32 zoo layers it picks (ResNet
        and U-Net 3x3, 3-D U-Net 3x3x3) the gradient ran 1.20x faster
        (geomean, 0.96-1.81x per layer; BENCHMARKS.md).
      tap_block_bytes: 2-D/3-D dense stride-1 convs whose kernel gradient
        is the per-tap scan (the three fields above) and whose output is at
        least ``tap_block_min_bytes`` run per-tap GEMMs in a loop over taps,
        in row blocks of this many bytes of output (0: never); on the 24
        zoo and suite records it changes the forward ran 1.11x faster
        (geomean, 0.98-1.46x per record; BENCHMARKS.md) ...
      tap_block_min_bytes: ... (the output size from which it applies).
      shifted_2d_min_i: dense 2-D stride-1 kernels (not kernel-bound) on at
        least this many input channels whose all-tap GEMM output exceeds
        ``alltaps_max_bytes`` run per-tap GEMMs over whole padded rows in
        row blocks, their outputs shifted and summed (``"shifted"``),
        before the tap loop and ``"wide"`` are considered, where the
        blocks' products of every tap fit the memory rule's room
        (``plan._shifted_2d``).  Off on the ``avx2`` family (on a 2-core
        AMD EPYC the 5 U-Net records it took ran 0.75-1.01x as fast in an
        A/B run of the whole ``avx512`` table); on ``avx512``
        hosts, whose GEMMs run 2-3x faster against the same memory
        passes, it ran the 9 forward and 10 gradient zoo and suite records
        it changes 1.08x and 1.04x faster (geometric means, none slower
        than 0.98x; BENCHMARKS.md).
      custom_kernel_grads: use the row-scan kernel-gradient rules of the
        depthwise and grouped formulations (they work around a slow XLA:CPU
        reduction); off, plain autodiff.
      rowscan_carry_bytes: the row scan computes as many columns of an
        output row per step (a divisor of the width) as keep its ``T * I``
        per-tap accumulators of one example within this many bytes.  Wide
        rows arise where a vmapped per-example gradient folds its examples
        into channels: ResNeXt-style 32-group 3x3 layer at batch 8 (``8 x
        32`` groups on one ``28 x 28`` image, 16.5 MB of accumulators per
        row), per-example gradient 35.1 -> 27.5 ms with 2 MiB.
      per_example_loop: per-example kernel gradients (``vmap(grad(...))``
        of a dense kernel with several taps, or of a depthwise one) whose
        one-example plan loops (row blocks, a scan over taps, per-tap
        kernel-gradient GEMMs, the 1-D depthwise kernel tangent) run one
        example after another (``lax.map``) instead of vmapped side by
        side, where every scan step gets the examples' axis (batched GEMMs,
        ``B`` times larger carries, XLA:CPU reductions with a kept batch
        axis); suite records on a 2-core CPU: vol3d 247 -> 193 ms, causal1d
        3.25 -> 2.19, dense3_b8 and atrous 1.04-1.06x faster (the rule:
        ``plan.per_example_loop``) ...
      per_example_pointwise_min_o: per-example kernel gradients of 1x1
        dense kernels with at least this many output channels run each
        example's kernel gradient (a batch of ``x_e^T @ ct_e`` GEMMs) instead
        of folding the examples into feature groups (two transposes and a
        grouped kernel gradient); on a 2-core Intel Xeon, over the zoo's 88
        batch-8 1x1 layers, per example was faster on 56 and slower on 11,
        nine of them with fewer than 64 output channels (ResNet-50
        ``layer3.0.conv1`` 0.58 -> 0.87 of the batched gradient's speed;
        U-Net ``outc``, 2 channels: 3.90 -> 0.97); with the threshold the
        geomean went 0.51 -> 0.64.
      kernel_grad_positions_max: depthwise kernel gradients (with
        ``custom_kernel_grads``) of at most this many output positions per
        example run as one fused loop over the positions
        (``positions.kernel_grad``: the cotangent as the kernel of
        a correlation with the input), instead of a row scan of one
        accumulator per tap.  On a 2-core Intel Xeon, the zoo's 19
        depthwise layers of 4 to 64 positions (9 to 49 taps): kernel
        gradient 1.5-4.5x faster at batch 1 and 0.98-2.9x at batch 8,
        per-example gradients 1.7-9.1x; a 7x7 kernel on 16 x 16 (256
        positions) ran 3.5x slower batched and 1.2x per example.
      kernel_grad_position_terms: ... summed over a batch, a few examples
        per step of a scan over the examples, as many as keep one step's
        products per output (examples times positions) within this many:
        a 7x7 kernel on 2 x 2 at batch 8 ran 0.30 ms with all 32 in one
        step, 0.71 ms one example per step; on 4 x 4 two examples per step
        gained nothing over one.
      per_example_positions_max: per-example kernel gradients of dense
        layers written for one image (``vmap(grad(...))``) with at most
        this many output positions are sums of products over the positions,
        every example at once (``plan.per_example_positions``), instead of a
        GEMM of that depth per example (which XLA:CPU runs far below its
        rate, and whose result it copies into a 1x1 kernel's layout).  On a
        2-core Intel Xeon, the zoo's 67 batch-8 dense layers of 1-16
        positions: 1.0-2.8x faster on the 1x1 and the overlapping 3x3
        layers (ResNet-50 ``layer4.1.conv1`` 21.8 -> 10.6 ms), 0.83-0.94x on
        ConvNeXt-T's 2x2 stride-2 downsamplers (disjoint windows, which keep
        their GEMM) and HiFi-GAN ``conv_pre`` (0.94x), about 1x on
        EfficientNet-B0's squeeze-excitation layers (one position).
      per_example_patches_ratio: per-example kernel gradients of dense
        kernels with several taps whose positions per example (output
        positions; a transposed layer's input positions) are at most this
        many times the output channels run as one GEMM per example and tap,
        every example at once (``tapgemm.kernel_grads``;
        ``plan.per_example_patches``): transposed (stride-1) layers always,
        instead of folding the examples into feature groups; on a 2-core
        Intel Xeon, the zoo's five such batch-8 layers (q/O 0.02-0.25) ran
        1.7-2.3x faster (U-Net ``up1.up`` 67.0 -> 29.3 ms), those of q/O
        1-4 0.92-1.05x ...
      per_example_patches_min_bytes: ... and ordinary layers when each
        example's kernel takes at least this many bytes, instead of looping
        over the examples: U-Net ``up1.conv1`` (18 MiB per example) 132.6
        -> 70.8 ms, 3-D U-Net ``up1.conv1`` 168.4 -> 90.5 ms; kernels of
        0.3-9 MiB ran 0.88-1.04x.
      per_example_patches_cache_bytes: ... and ordinary layers whose
        one-example plan builds its patch matrix (``"im2col"``: few input
        channels) in row blocks, a loop each example would run on its own,
        when that matrix takes at most this many bytes per example ...
      per_example_patches_total_bytes: ... and every example's together at
        most this many (and the workspace, which they come out of): one
        GEMM per example over its whole patch matrix, every example at
        once.  On a 2-core Intel Xeon, 3x3x3 convolutions of 2-4 input
        channels on 12^3-16^3 volumes (0.5-1.7 MB of patches per
        example), 8-16 examples (9-11 MB together): per-example
        gradients 1.2-2.0x faster in most runs (3-D U-Net ``down0.conv1``
        at batch 8: 0.71-0.73 -> 0.81-0.87 of the batched gradient's speed
        in four A/B runs), 0.84-0.95x in the host's slow spells; 16 MB
        together (12 examples of 16^3) as often slower as faster, 18-21 MB
        (32 examples of 12^3, 16 of 16^3) 0.63-0.66x, 24^3-32^3 volumes
        (4.5-10.6 MB each) 0.7-0.85x of the loop, so those keep it.  The
        same on both CPU families (first on ``avx512`` only; on a 2-core
        AMD EPYC 3-D U-Net ``down0.conv1``'s per-example gradients at batch
        8 ran 1.21x and 1.36x as fast in two A/B runs, 0.65-0.66 -> 0.79-0.90
        of the batched gradient's speed); 0 (off) on accelerators.
      per_example_cotangent_ratio: per-example kernel gradients of dense
        stride-1 kernels with several taps whose ``T * O`` is at most this
        many times ``I`` (times ``prod(s)`` for a transposed layer of stride
        ``s``; one image per example, one group) run as one GEMM per
        example against the cotangent's ``T`` shifted copies (strided
        slices, transposed), every example at once
        (``tapgemm.kernel_grads_by_cotangent``, the input's border tap by
        tap), instead of one example's planned gradient after another (or,
        transposed, the examples folded into feature groups).  On a 2-core
        Intel Xeon, HiFi-GAN's ``conv_post`` (4096 x 32 -> 1, 7 taps) at
        batch 8: per-example gradients 4.61-5.02 -> 2.60-2.71 ms in three
        A/B runs (0.28-0.31 -> 0.52-0.55 of the batched gradient's speed;
        lax's per-example 4.05-4.28 ms); the transposed upsamplers of
        HiFi-GAN past the first and the U-Nets' of 256+ input positions,
        1.25-2.6x (``ups.1``:
        33.9 -> 13.0 ms).  0 (off) on accelerators.
      cotangent_box_min_taps: those cotangent GEMMs of a transposed layer,
        batched (``kernel_grad="cotangent"``) or per example, group the taps
        by the box of input elements each pairs with an output, one GEMM
        per box and no border term
        (``tapgemm.kernel_grads_by_cotangent``), when every box's group
        has at least this many taps; 0: never.  On a 2-core Intel Xeon,
        HiFi-GAN's upsamplers of kernel 16, stride 8 (boxes of 4, 8 and 4
        taps): gradients at batch 8 1.06-1.21x faster over five A/B runs
        (batch 1 1.03-1.18x), ``ups.1``'s per-example gradients 1.11-1.30x
        in four runs of five (0.73x in one); kernel 4, stride 2 (1, 2 and
        1 taps) 0.65-1.02x, so those keep one GEMM and the border term.
      per_example_grouped_patch_bytes: per-example kernel gradients of
        grouped (not depthwise) kernels whose patches take at most this
        many bytes per example run as one GEMM per example and group, every
        example at once (``tapgemm.kernel_grads``), instead of folding the
        examples into ``B * G`` feature groups.  On a 2-core Intel Xeon,
        ResNeXt-50's batch-8 grouped 3x3 layers (32 groups): 2.19-2.25x
        faster on 8 x 8 outputs (0.59 MB of patches; against the batched
        gradient 0.52-0.55 -> 1.16-1.21), 1.26-1.47x on 4 x 4 and 2 x 2;
        0.60x at 16 x 16 (1.2 MB) and 0.30x on group32 (28 x 28, 7.2 MB).
      per_example_grouped_carry_bytes: per-example kernel gradients of
        grouped (not depthwise) layers whose one-example plan is the fused
        multiply-adds with the row-scan kernel gradient run each example's
        row scan, side by side while all examples' accumulator rows take at
        most this many bytes, one after another beyond, instead of folding
        the examples into ``B * G`` feature groups (two transposes of the
        input and the cotangent; ``plan.per_example_grouped_rows``).  On a
        2-core Intel Xeon at batch 8: group32 0.75 -> 0.99 of the batched
        gradient's speed (looped), ResNeXt-50 ``layer1.0.conv2`` 0.82 ->
        1.01 (side by side).  ``avx512`` hosts (4 MiB); 0 (fold) on
        ``avx2`` hosts (on a 2-core AMD EPYC ``layer1.0.conv2`` side by side
        ran 0.91-0.93x as fast as folded and looped 0.79x, ``group32``
        looped 1.09-1.15x, so side by side loses there) and on accelerators.
      per_example_grouped_loop_min_bytes: with
        ``per_example_grouped_carry_bytes`` 0, those per-example gradients
        run one example after another where every example's accumulator
        rows together take at least this many bytes, and fold below.  8
        MiB on ``avx2`` hosts (a 2-core AMD EPYC at batch 8: ``group32``,
        16.5 MB, looped 1.09-1.21x as fast as folded, 0.79 -> 0.95 of the
        batched gradient's speed; ResNeXt-50 ``layer1.0.conv2``, 2.4 MB,
        folds: looped it ran 0.79x); unused on ``avx512`` hosts (their
        carry field decides) and accelerators (no loops).
      per_example_loop_min_bytes: ... and so do depthwise row scans whose
        examples' outputs together reach this many bytes (dw3, 112 x 112 x
        96 at batch 8: 55.6 -> 22.9 ms, temporaries 81.6 -> 15.0 MB; the
        zoo's depthwise layers, at most 0.8 MB, ran 0.66-0.99x looped).
      depthwise_gemm_precision: the ``jax.lax.Precision`` name for the GEMMs
        that reformulate a depthwise conv, when the caller passed none
        (``"highest"`` on devices that would otherwise round to TF32/bf16,
        where a depthwise conv is exact float32); ``None`` keeps the
        default.
    """

    name: str = "cpu"
    family: str = "avx2"
    unroll_limit: int = 64
    outer_max_i: int = 1
    im2col_max_i: int = 4
    alltaps_max_bytes: int = 2 * _MiB
    alltaps_whole_scale: int = 8
    wide_min_width: int = 64
    wide_2d_max_i: int = 64
    alltaps_max_i: int = 0
    kernel_bound_ratio: int = 8
    cache_patch_bytes: int = 2 * _MiB
    kernel_bound_scan: bool = True
    rows_max_i: int = 0
    wide_max_i: int = 255
    taps_min_i: int = 256
    tap_loop_min_i: int = 128
    tap_loop_min_taps: int = 7
    s2d_max_i: int = 128
    block_io_fraction: float = 0.8
    block_min_bytes: int = _MiB // 2
    block_max_bytes: int = 4 * _MiB
    im2col_unblocked_max_bytes: int = 2 * _MiB
    im2col_2d_unblocked_max_bytes: int = 16 * _MiB
    im2col_2d_whole_min_o: int = 32
    grouped_max_i: int = 16
    grouped_max_terms: int = 100
    grouped_rule_max_terms: int = 128
    grouped_rows_min_terms: int = 64
    pad_in_loop_max_taps: int = 9
    toeplitz_min_taps: int = 64
    toeplitz_block: int = 64
    hankel_min_taps: int = 512
    fft_min_taps: int = 512
    phase_gemm_max_taps: int = 2
    phase_depth_to_space: bool = True
    phase_one_gemm_max_bytes: int = 16 * _MiB
    phase_taps_kernel_grad_min_positions: int = 1024
    workspace_bytes: int = 64 * _MiB
    branch_free: bool = False
    custom_kernel_grads: bool = True
    rowscan_carry_bytes: int = 2 * _MiB
    per_example_loop: bool = True
    per_example_loop_min_bytes: int = 16 * _MiB
    per_example_pointwise_min_o: int = 64
    kernel_grad_positions_max: int = 64
    kernel_grad_position_terms: int = 32
    per_example_positions_max: int = 16
    per_example_patches_ratio: float = 0.5
    per_example_cotangent_ratio: float = 1.0
    cotangent_box_min_taps: int = 4
    per_example_patches_min_bytes: int = 16 * _MiB
    per_example_patches_cache_bytes: int = 2 * _MiB
    per_example_patches_total_bytes: int = 12 * _MiB
    per_example_grouped_patch_bytes: int = _MiB
    per_example_grouped_carry_bytes: int = 0
    per_example_grouped_loop_min_bytes: int = 8 * _MiB
    tap_gemm_kernel_tangent: bool = True
    tap_gemm_min_rows: int = 512
    tap_scan_min_o: int = 8
    tap_scan_transpose_min_i: int = 128
    hankel_kernel_grad_min_tap_channels: int = 352
    hankel_kernel_grad_min_i: int = 32
    hankel_kernel_grad_max_i: int = 64
    hankel_kernel_grad_blocks: tuple[int, ...] = (8, 4)
    tap_scan_nd_min_rows: int = 512
    tap_scan_nd_min_i: int = 64
    tap_scan_2d_min_io: int = 8192
    tap_block_bytes: int = 2 * _MiB
    tap_block_min_bytes: int = _MiB // 2
    shifted_2d_min_i: int = 1 << 62
    depthwise_gemm_precision: str | None = None

    @property
    def label(self) -> str:
        """The name, with the CPU family where there is one (``"cpu/avx512"``)."""
        return f"{self.name}/{self.family}" if self.family else self.name

    def replace(self, **changes) -> Profile:
        """A copy with some constants changed (e.g. for an experiment).

        Example:
          >>> from jaxconv import get_profile
          >>> get_profile("cpu").replace(unroll_limit=16).unroll_limit
          16
        """
        return dataclasses.replace(self, **changes)


# GPU and TPU: no conditionals (branch-free guards, or formulations that
# need none: padding applied before the depthwise loop, transposed phases as
# GEMMs, no space-to-depth), no cache-sized row blocks (blocks only when the
# memory rule plus the workspace asks for them, so a dense conv is one GEMM
# program rather than a loop of small ones), no ``lax.map`` over channels
# (the Toeplitz scan of batched GEMMs instead of the per-channel Hankel
# GEMMs), plain autodiff for kernel gradients (XLA's column reductions are
# fast there), per-example kernel gradients side by side (one batched
# kernel each rather than a sequence of small ones), and exact float32 GEMMs
# for depthwise reformulations.
_ACCELERATOR = Profile(
    workspace_bytes=256 * _MiB, block_min_bytes=256 * _MiB,
    block_max_bytes=256 * _MiB, im2col_unblocked_max_bytes=0, pad_in_loop_max_taps=0,
    hankel_min_taps=1 << 62, fft_min_taps=1 << 62,
    s2d_max_i=0, grouped_rows_min_terms=1 << 62, phase_gemm_max_taps=64,
    phase_one_gemm_max_bytes=0,
    alltaps_whole_scale=1, im2col_2d_unblocked_max_bytes=0,
    im2col_2d_whole_min_o=1 << 62, hankel_kernel_grad_min_tap_channels=1 << 62,
    per_example_patches_cache_bytes=0, per_example_patches_total_bytes=0,
    branch_free=True, kernel_bound_scan=False,
    custom_kernel_grads=False, tap_gemm_kernel_tangent=False, wide_max_i=0,
    taps_min_i=1 << 62, tap_loop_min_i=1 << 62, tap_scan_min_o=1 << 62, outer_max_i=0,
    tap_scan_nd_min_rows=1 << 62, tap_block_bytes=0,
    wide_min_width=1 << 62, wide_2d_max_i=0, alltaps_max_i=64,
    depthwise_gemm_precision="highest", per_example_loop=False,
    per_example_pointwise_min_o=1 << 62, per_example_positions_max=0,
    per_example_patches_ratio=0.0, per_example_grouped_patch_bytes=0, family="",
    per_example_cotangent_ratio=0.0,
)
# The cpu preset's constants per CPU family.  XLA:CPU's GEMM runs at the
# width of the host's vector unit while copies, pads and elementwise sums
# run at its memory bandwidth, so the balance between a formulation's GEMMs
# and its passes over memory shifts with the vector width: measured on
# 2-core hosts, a 1024^3 float32 GEMM ran 105-176 GFLOP/s on an AMD EPYC
# (AVX2) and 300-314 on an Intel Xeon (AVX-512), so a pass over memory
# costs the Xeon relatively more (BENCHMARKS.md).  ``avx2`` is used for
# every CPU without AVX-512 (ARM included).  The forms first measured to
# win on the Xeon that also won on the AMD EPYC in interleaved A/B runs of
# every zoo and suite record they change (whole 2-D patch matrices, the
# unblocked all-tap GEMM, the block-Hankel kernel gradient: 219-223
# records, geomean new / old 1.045 and 1.051 in two runs, records below
# 0.8 of lax 78 -> 52 and 75 -> 59; per-example patch GEMMs) are the
# preset's own values; ``avx2``
# is the preset as it is, ``avx512`` adds what was measured to win there
# only.
CPU_FAMILIES: dict[str, dict[str, object]] = {
    "avx2": {},
    "avx512": {"shifted_2d_min_i": 64, "per_example_grouped_carry_bytes": 4 * _MiB},
}
PRESETS: dict[str, Profile] = {
    "cpu": Profile(),
    "gpu": _ACCELERATOR.replace(name="gpu"),
    "tpu": _ACCELERATOR.replace(name="tpu"),
}
_BACKENDS = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}
_ACTIVE: contextvars.ContextVar[Profile | None] = contextvars.ContextVar(
    "jaxconv_profile", default=None)


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in ``cpuinfo`` (the
    text of Linux's ``/proc/cpuinfo``; x86 ``flags``, ARM ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux: no flags, the default family
        return ""


@functools.cache
def _host_family() -> str:
    """This host's family, from its ``/proc/cpuinfo`` (read once)."""
    return cpu_family(_read_cpuinfo())


def cpu_family(cpuinfo: str | None = None) -> str:
    """The CPU family whose constants the ``cpu`` preset uses here.

    ``"avx512"`` on hosts whose processor has AVX-512 (the ``avx512f`` flag
    of ``/proc/cpuinfo``), ``"avx2"`` on every other host (the default,
    also where ``/proc/cpuinfo`` cannot be read).  The environment variable
    ``JAXCONV_CPU_FAMILY`` overrides the detection (e.g. to plan for
    another host when exporting, or to compare the two tables).

    Args:
      cpuinfo: the text to read the flags from instead of this host's
        ``/proc/cpuinfo`` (for tests).

    Raises:
      ValueError: ``JAXCONV_CPU_FAMILY`` names no family.

    Example:
      >>> from jaxconv.algorithms.profile import cpu_family
      >>> cpu_family("flags : fpu sse2 avx2 avx512f avx512bw")
      'avx512'
      >>> cpu_family("flags : fpu sse2 avx2")
      'avx2'
    """
    env = os.environ.get("JAXCONV_CPU_FAMILY")
    if env and cpuinfo is None:
        if env not in CPU_FAMILIES:
            raise ValueError(f"`JAXCONV_CPU_FAMILY` (={env!r}) must be one of "
                             f"{', '.join(map(repr, CPU_FAMILIES))}.")
        return env
    if cpuinfo is None:
        return _host_family()
    return "avx512" if "avx512f" in _cpu_flags(cpuinfo) else "avx2"


def get_profile(name: str | Profile) -> Profile:
    """The preset called ``name`` (``"cpu"``, ``"gpu"`` or ``"tpu"``).

    ``JAXCONV_WORKSPACE_MB``, when set, replaces the preset's workspace.  A
    :class:`Profile` passes through unchanged.

    Raises:
      ValueError: ``name`` is not a preset, or ``JAXCONV_WORKSPACE_MB`` is not
        a non-negative number.

    Example:
      >>> from jaxconv import get_profile
      >>> get_profile("gpu").name
      'gpu'
    """
    if isinstance(name, Profile):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key not in PRESETS:
        raise ValueError(f"`profile` (={name!r}) must be one of "
                         f"{', '.join(map(repr, PRESETS))} or a jaxconv.Profile.")
    profile = PRESETS[key]
    if key == "cpu":
        family = cpu_family()
        profile = profile.replace(family=family, **CPU_FAMILIES[family])
    mb = os.environ.get("JAXCONV_WORKSPACE_MB")
    if mb:
        try:
            value = float(mb)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ValueError(f"`JAXCONV_WORKSPACE_MB` (={mb!r}) must be a "
                             "non-negative number of MiB.")
        profile = profile.replace(workspace_bytes=int(value * _MiB))
    return profile


def current_profile() -> Profile:
    """The profile convolutions are planned with right now.

    ``use_profile`` wins over ``JAXCONV_PROFILE``, which wins over the preset
    of ``jax.default_backend()``.

    Example:
      >>> from jaxconv import current_profile, use_profile
      >>> with use_profile("tpu"):
      ...     current_profile().name
      'tpu'
    """
    active = _ACTIVE.get()
    if active is not None:
        return active
    env = os.environ.get("JAXCONV_PROFILE")
    if env:
        return get_profile(env)
    return get_profile(_BACKENDS.get(jax.default_backend(), "cpu"))


@contextlib.contextmanager
def use_profile(profile: str | Profile) -> Iterator[Profile]:
    """Plan every convolution inside the ``with`` block with ``profile``.

    ``profile`` is a preset name (``"cpu"``, ``"gpu"``, ``"tpu"``) or a
    :class:`Profile` (e.g. ``get_profile("cpu").replace(unroll_limit=16)``).
    The profile only changes *how* a convolution is computed, never its
    result beyond floating-point rounding.  It is read when a function is
    traced, and JAX keeps one trace per Python function: a function jitted
    outside the block keeps its compiled plan, and so does one that was
    traced before and is jitted again inside it, even through a new
    ``jax.jit`` wrapper.  To compare profiles on one function, trace a fresh
    function object in each block (``jax.jit(lambda x, w: f(x, w))``) or
    call ``jax.clear_caches()`` first.

    Raises:
      ValueError: ``profile`` is not a preset name or a ``Profile``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxconv
      >>> with jaxconv.use_profile("gpu"):
      ...     jaxconv.conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))).shape
      (1, 6, 6, 4)
    """
    token = _ACTIVE.set(get_profile(profile))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)
