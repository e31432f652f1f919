/* Types shared by slic_fast's CPU kernel (_slic.c: colour, clustering, driver) and its connectivity step
 * (_slic_connectivity.c). */
#ifndef SSL_VIDEO_SLIC_H
#define SSL_VIDEO_SLIC_H
#include <stdint.h>

typedef struct {
    int h, w, rows, cols, ch, cw, k, sub;
    float step;
} Grid;

typedef struct { /* pixels to assign: planar Lab, size, cell size, normalised positions, centre per pixel (out) */
    const float *lab, *ys, *xs;
    int h, w, ch, cw;
    int32_t *cluster;
} Plane;

typedef struct { /* per-frame scratch, allocated once per call */
    uint8_t *rgb;          /* block-mean frame, h*w*3 */
    float *lab;            /* planar L, a, b: 3*h*w */
    float *ys, *xs;        /* y/step, x/step */
    float *centre;         /* k*5: L a b y x */
    double *acc;           /* k*6: sums and count */
    uint8_t *slot;         /* per sampled pixel: its centre's slot 0..8 in its cell */
    uint32_t *best;        /* one cell row's packed distances */
    int32_t *cluster;      /* h*w: each (block) pixel's centre */
    int32_t *comp, *stack; /* h*w */
    int32_t *edge_src, *edge_dst; /* 4*h*w */
    int32_t *ccluster, *base, *parent, *stepto, *target; /* per component */
    int32_t *final;        /* per component (or centre without connectivity): its label; wk->comp indexes it */
    int64_t *sizes;
    float *colour;         /* per component: its cluster's L a b */
    double *low;
    uint8_t *small;
} Work;

/* _slic_connectivity.c */
void slic_connectivity(int h, int w, Work *wk, int min_size);
void slic_compact(int hw, int k, Work *wk);
#endif
