/* slic_fast's CPU kernel: the algorithm of ssl_video/superpixels/segment.py (torch path) in plain C, one frame at a
 * time, single-threaded, the GIL released. Hand-written because on one CPU core the torch path is bound by per-call
 * overhead (~25 tensor calls per k-means pass) and no maintained library does this SLIC variant.
 *
 * Steps per frame, each the same as the torch path's (docs/superpixels.md):
 *   f x f block mean (uint8, rounded) -> Lab / compactness (tables from Python: the same constants) -> grid-cell
 *   centres from every `subsample`-th pixel of each cell -> k-means passes over the sampled pixels, each pixel against
 *   its own and the 8 neighbouring cells' centres, L1 distance |d_lab| + |d_xy| (already scaled), argmin with the slot in
 *   the float's low 4 bits (ties to the lower slot, as the torch path), stop once <= tol of the samples changed centre
 *   -> assignment of every pixel -> 4-connected components, those under min_size merged into the larger neighbour
 *   closest in cluster colour (the roots' own), round by round (all small components at once, as the vectorised torch code)
 *   -> labels numbered by first pixel in raster order, upsampled to the frame.
 * Build with -ffp-contract=off: fused multiply-adds would round differently from the torch path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_slic.h"

/* ------------------------------------------------------------------------------------------------ colour */
static void block_mean(const uint8_t *src, int H, int W, int f, uint8_t *dst, int h, int w) {
    int whole = (H % f == 0) && (W % f == 0);
    if (whole && f == 2) { /* the common case, without the general loop's index clamps */
        for (int y = 0; y < h; y++) {
            const uint8_t *a = src + (size_t)(2 * y) * W * 3, *b = a + (size_t)W * 3;
            uint8_t *o = dst + (size_t)y * w * 3;
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    o[3 * x + c] = (uint8_t)((a[6 * x + c] + a[6 * x + 3 + c] + b[6 * x + c] + b[6 * x + 3 + c] + 2) >> 2);
        }
        return;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int sum = 0;
                for (int i = 0; i < f; i++) {
                    int yy = y * f + i < H ? y * f + i : H - 1; /* replicate the edge to whole blocks */
                    for (int j = 0; j < f; j++) {
                        int xx = x * f + j < W ? x * f + j : W - 1;
                        sum += src[((size_t)yy * W + xx) * 3 + c];
                    }
                }
                /* the torch path: integer round-half-up for whole blocks, float round-half-even otherwise */
                dst[((size_t)y * w + x) * 3 + c] = whole ? (uint8_t)((sum + f * f / 2) / (f * f))
                                                         : (uint8_t)nearbyintf((float)sum / (float)(f * f));
            }
}

/* cube root of t in [0.008856, ~1] (XYZ / white of sRGB): linear interpolation in a 2^16-interval table, at most ~1
 * float ulp off (|f''| dt^2 / 8 at the low end), as close as the torch path's exp(log(t) / 3); libm's cbrtf was a
 * third of the kernel's time */
#define CBRT_STEPS 65536
static float cbrt_table[CBRT_STEPS + 2];

static void build_cbrt_table(void) {
    for (int i = 0; i <= CBRT_STEPS + 1; i++) cbrt_table[i] = (float)cbrt((double)i / CBRT_STEPS);
}

static inline float cube_root(float t) {
    float u = t * (float)CBRT_STEPS;
    int i = (int)u;
    i = i < CBRT_STEPS ? i : CBRT_STEPS; /* t a hair above 1 (rounding): extrapolate from the last interval */
    float frac = u - (float)i;
    return cbrt_table[i] + frac * (cbrt_table[i + 1] - cbrt_table[i]);
}

static void to_lab(const uint8_t *rgb, int n, const float *lin, const float *m, float scale, float *lab) {
    const float k116 = (float)(116.0 * scale), k16 = (float)(16.0 * scale);
    const float k500 = (float)(500.0 * scale), k200 = (float)(200.0 * scale), off = (float)(16.0 / 116.0);
    for (int i = 0; i < n; i++) {
        float r = lin[rgb[3 * i]], g = lin[rgb[3 * i + 1]], b = lin[rgb[3 * i + 2]];
        float f[3];
        for (int c = 0; c < 3; c++) {
            float t = m[3 * c] * r + m[3 * c + 1] * g + m[3 * c + 2] * b;
            float linear = t * 7.787f + off;
            float cube = cube_root(t > 0.008856f ? t : 0.008856f);
            f[c] = cube < linear ? cube : linear;
        }
        lab[i] = f[1] * k116 - k16;
        lab[n + i] = (f[0] - f[1]) * k500;
        lab[2 * n + i] = (f[1] - f[2]) * k200;
    }
}

/* ---------------------------------------------------------------------------------------------- k-means */
/* Nearest of the cell's candidate centres for pixels (y, x0..x1 step s) of cell (r, c): slot 0..8 per pixel. */
static int assign_cell(const Grid *g, const Plane *pl, const Work *wk, int r, int c, int stride, int store_cluster,
                       uint8_t *slots, int64_t *moved) {
    int cand[9], slot_of[9], nc = 0;
    for (int dr = -1; dr <= 1; dr++)
        for (int dc = -1; dc <= 1; dc++) {
            int rr = r + dr, cc = c + dc;
            if (rr >= 0 && rr < g->rows && cc >= 0 && cc < g->cols) {
                cand[nc] = rr * g->cols + cc;
                slot_of[nc++] = (dr + 1) * 3 + (dc + 1);
            }
        }
    int y0 = r * pl->ch, x0 = c * pl->cw;
    int y1 = y0 + pl->ch < pl->h ? y0 + pl->ch : pl->h, x1 = x0 + pl->cw < pl->w ? x0 + pl->cw : pl->w;
    int hw = pl->h * pl->w, count = 0;
    const float *L = pl->lab, *A = pl->lab + hw, *B = pl->lab + 2 * hw;
    uint32_t *best = wk->best;
    for (int y = y0; y < y1; y += stride) {
        int row = y * pl->w;
        for (int x = x0, i = 0; x < x1; x += stride) best[i++] = 0xFFFFFFFFu;
        float py = pl->ys[y];
        for (int j = 0; j < nc; j++) {
            const float *ct = wk->centre + 5 * cand[j];
            float cl = ct[0], ca = ct[1], cb = ct[2], dy = fabsf(py - ct[3]), cx = ct[4];
            uint32_t tag = (uint32_t)slot_of[j];
            int i = 0;
            for (int x = x0; x < x1; x += stride, i++) {
                int p = row + x;
                /* L1, summed in the torch path's order: |dL| + |da| + |db| + |dy| + |dx| */
                float d = fabsf(L[p] - cl) + fabsf(A[p] - ca) + fabsf(B[p] - cb) + dy + fabsf(pl->xs[x] - cx);
                uint32_t bits;
                memcpy(&bits, &d, 4);
                bits = (bits & ~15u) | tag;
                best[i] = bits < best[i] ? bits : best[i];
            }
        }
        int i = 0;
        for (int x = x0; x < x1; x += stride, i++) {
            int s = (int)(best[i] & 15u);
            if (store_cluster) {
                pl->cluster[row + x] = (r + s / 3 - 1) * g->cols + (c + s % 3 - 1);
            } else {
                if (moved && slots[count] != s) (*moved)++;
                slots[count++] = (uint8_t)s;
            }
        }
    }
    return count;
}

/* Centres <- mean of their sampled pixels ([L a b y/S x/S]); first pass: each cell's own pixels. */
static void update(const Grid *g, Work *wk, int first) {
    int hw = g->h * g->w, n = 0;
    memset(wk->acc, 0, sizeof(double) * 6 * g->k);
    for (int r = 0; r < g->rows; r++)
        for (int c = 0; c < g->cols; c++) {
            int y0 = r * g->ch, x0 = c * g->cw;
            int y1 = y0 + g->ch < g->h ? y0 + g->ch : g->h, x1 = x0 + g->cw < g->w ? x0 + g->cw : g->w;
            for (int y = y0; y < y1; y += g->sub)
                for (int x = x0; x < x1; x += g->sub) {
                    int s = first ? 4 : wk->slot[n++];
                    int id = (r + s / 3 - 1) * g->cols + (c + s % 3 - 1), p = y * g->w + x;
                    double *a = wk->acc + 6 * id;
                    a[0] += wk->lab[p];
                    a[1] += wk->lab[hw + p];
                    a[2] += wk->lab[2 * hw + p];
                    a[3] += wk->ys[y];
                    a[4] += wk->xs[x];
                    a[5] += 1.0;
                }
        }
    for (int i = 0; i < g->k; i++)
        if (wk->acc[6 * i + 5] > 0)
            for (int d = 0; d < 5; d++) wk->centre[5 * i + d] = (float)(wk->acc[6 * i + d] / wk->acc[6 * i + 5]);
}

static void cluster_frame(const Grid *g, Work *wk, int iters, double tol) {
    Plane low = {wk->lab, wk->ys, wk->xs, g->h, g->w, g->ch, g->cw, wk->cluster};
    /* the torch path counts the padding of cells (weight 0, never moving) in the samples per frame */
    int per_cell = ((g->ch + g->sub - 1) / g->sub) * ((g->cw + g->sub - 1) / g->sub);
    double limit = tol * per_cell * g->k;
    update(g, wk, 1);
    for (int it = 0; it < iters - 1; it++) {
        int64_t moved = 0;
        int n = 0;
        for (int r = 0; r < g->rows; r++)
            for (int c = 0; c < g->cols; c++)
                n += assign_cell(g, &low, wk, r, c, g->sub, 0, wk->slot + n, it > 0 ? &moved : NULL);
        if (it > 0 && (double)moved <= limit) break;
        update(g, wk, 0);
    }
    for (int r = 0; r < g->rows; r++)
        for (int c = 0; c < g->cols; c++) assign_cell(g, &low, wk, r, c, 1, 1, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------------ driver */
static void *grab(size_t bytes, int *failed) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) *failed = 1;
    return p;
}

static void release(Work *wk) {
    void *all[] = {wk->rgb,    wk->lab,      wk->ys,   wk->xs,     wk->centre, wk->acc,    wk->slot,
                   wk->best,   wk->cluster,  wk->comp, wk->stack,  wk->edge_src, wk->edge_dst, wk->ccluster,
                   wk->base,   wk->parent,   wk->stepto, wk->target, wk->sizes, wk->colour, wk->low,
                   wk->small,  wk->final};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) free(all[i]);
}

static int allocate(Work *wk, const Grid *g) {
    size_t hw = (size_t)g->h * g->w, k = (size_t)g->k;
    size_t cap = hw > k ? hw : k; /* components: at most one per pixel; slic_compact() indexes centres */
    int failed = 0;
    memset(wk, 0, sizeof(*wk));
    wk->rgb = grab(hw * 3, &failed);
    wk->lab = grab(sizeof(float) * hw * 3, &failed);
    wk->ys = grab(sizeof(float) * g->h, &failed);
    wk->xs = grab(sizeof(float) * g->w, &failed);
    wk->centre = grab(sizeof(float) * 5 * k, &failed);
    wk->acc = grab(sizeof(double) * 6 * k, &failed);
    wk->slot = grab(hw, &failed);
    wk->best = grab(sizeof(uint32_t) * (g->cw + 1), &failed);
    wk->cluster = grab(sizeof(int32_t) * hw, &failed);
    wk->comp = grab(sizeof(int32_t) * hw, &failed);
    wk->stack = grab(sizeof(int32_t) * hw, &failed);
    wk->edge_src = grab(sizeof(int32_t) * 4 * hw, &failed);
    wk->edge_dst = grab(sizeof(int32_t) * 4 * hw, &failed);
    wk->ccluster = grab(sizeof(int32_t) * cap, &failed);
    wk->base = grab(sizeof(int32_t) * cap, &failed);
    wk->parent = grab(sizeof(int32_t) * cap, &failed);
    wk->stepto = grab(sizeof(int32_t) * cap, &failed);
    wk->target = grab(sizeof(int32_t) * cap, &failed);
    wk->final = grab(sizeof(int32_t) * cap, &failed);
    wk->sizes = grab(sizeof(int64_t) * cap, &failed);
    wk->colour = grab(sizeof(float) * 3 * cap, &failed);
    wk->low = grab(sizeof(double) * cap, &failed);
    wk->small = grab(cap, &failed);
    return failed;
}

typedef struct {
    int n, H, W, f, iters, connect, min_size;
    double tol;
    float scale;
    int64_t start_label;
} Params;

static void run_frames(const uint8_t *frames, int64_t *out, const float *lin, const float *xyz, Grid *g,
                       const Params *pr, Work *wk) {
    int f = pr->f;
    for (int y = 0; y < g->h; y++) wk->ys[y] = (float)y / g->step;
    for (int x = 0; x < g->w; x++) wk->xs[x] = (float)x / g->step;
    size_t hw = (size_t)g->h * g->w, HW = (size_t)pr->H * pr->W;
    for (int i = 0; i < pr->n; i++) {
        const uint8_t *src = frames + (size_t)i * HW * 3;
        if (f > 1) block_mean(src, pr->H, pr->W, f, wk->rgb, g->h, g->w);
        to_lab(f > 1 ? wk->rgb : src, (int)hw, lin, xyz, pr->scale, wk->lab);
        cluster_frame(g, wk, pr->iters, pr->tol);
        if (pr->connect) slic_connectivity(g->h, g->w, wk, pr->min_size);
        else slic_compact((int)hw, g->k, wk);
        int64_t *dst = out + (size_t)i * HW;
        for (int y = 0; y < pr->H; y++) { /* each pixel takes its block's label */
            const int32_t *row = wk->comp + (size_t)(y / f) * g->w;
            int64_t *line = dst + (size_t)y * pr->W;
            if (f == 1) {
                for (int x = 0; x < pr->W; x++) line[x] = wk->final[row[x]] + pr->start_label;
            } else if (y % f) {
                memcpy(line, line - pr->W, sizeof(int64_t) * pr->W); /* the row above, same blocks */
            } else {
                for (int x = 0; x < pr->W; x++) line[x] = wk->final[row[x / f]] + pr->start_label;
            }
        }
    }
}

static PyObject *slic(PyObject *self, PyObject *args) {
    Py_buffer rgb, out, lin, xyz;
    Grid g;
    Params pr;
    double step, scale;
    long long start_label;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*y*y*iiiiiiiiddiidiiL", &rgb, &out, &lin, &xyz, &pr.n, &pr.H, &pr.W, &g.rows,
                          &g.cols, &pr.f, &g.h, &g.w, &step, &scale, &pr.iters, &g.sub, &pr.tol, &pr.connect,
                          &pr.min_size, &start_label))
        return NULL;
    PyObject *result = NULL;
    Work wk;
    int bad = pr.n < 0 || pr.H < 1 || pr.W < 1 || g.rows < 1 || g.cols < 1 || pr.f < 1 || g.sub < 1 ||
              g.h != (pr.H + pr.f - 1) / pr.f || g.w != (pr.W + pr.f - 1) / pr.f || g.rows > g.h || g.cols > g.w;
    size_t pixels = (size_t)pr.n * pr.H * pr.W;
    if (bad || (size_t)rgb.len != pixels * 3 || (size_t)out.len != pixels * 8 || lin.len != 256 * 4 ||
        xyz.len != 9 * 4 || !PyBuffer_IsContiguous(&rgb, 'C') || !PyBuffer_IsContiguous(&out, 'C')) {
        PyErr_SetString(PyExc_ValueError, "_slic.slic: inconsistent shapes or buffer sizes");
        goto done;
    }
    g.ch = (g.h + g.rows - 1) / g.rows;
    g.cw = (g.w + g.cols - 1) / g.cols;
    g.k = g.rows * g.cols;
    g.step = (float)step;
    pr.scale = (float)scale;
    pr.start_label = start_label;
    if (allocate(&wk, &g)) {
        release(&wk);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    run_frames(rgb.buf, out.buf, lin.buf, xyz.buf, &g, &pr, &wk);
    Py_END_ALLOW_THREADS
    release(&wk);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&rgb);
    PyBuffer_Release(&out);
    PyBuffer_Release(&lin);
    PyBuffer_Release(&xyz);
    return result;
}

static PyMethodDef methods[] = {
    {"slic", slic, METH_VARARGS,
     "slic(rgb, out, lin_table, xyz_matrix, n, H, W, rows, cols, f, h, w, step, scale, iters, subsample, tol, "
     "connect, min_size, start_label): slic_fast's CPU kernel; writes int64 labels (n, H, W) into out."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_slic", "slic_fast's CPU kernel (C).", -1, methods};

PyMODINIT_FUNC PyInit__slic(void) {
    build_cbrt_table();
    return PyModule_Create(&module);
}
