/* slic_fast's CPU kernel, connectivity step (see _slic.c for the whole algorithm): 4-connected components of the
 * cluster map, those under min_size merged round by round into the neighbour closest in cluster colour. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_slic.h"

/* --------------------------------------------------------------------------------------------- connectivity */
static inline int32_t find_root(int32_t *uf, int32_t a) {
    while (uf[a] != a) a = uf[a] = uf[uf[a]]; /* path halving */
    return a;
}

/* 4-connected components of wk->cluster (h x w), numbered by first pixel in raster order, into wk->comp; each one's
 * cluster into wk->ccluster. One raster scan with union-find over provisional labels, then one relabelling pass.
 * Returns their count. */
static int components(int h, int w, Work *wk) {
    const int32_t *map = wk->cluster;
    int32_t *comp = wk->comp, *uf = wk->stack, *first = wk->parent, *rank = wk->target;
    int next = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int p = y * w + x, lab = map[p];
            int left = x > 0 && map[p - 1] == lab ? comp[p - 1] : -1;
            int up = y > 0 && map[p - w] == lab ? comp[p - w] : -1;
            if (left < 0 && up < 0) {
                uf[next] = next;
                first[next] = lab;
                comp[p] = next++;
            } else if (left >= 0 && up >= 0 && left != up) {
                int32_t a = find_root(uf, left), b = find_root(uf, up);
                if (a < b) uf[b] = a; /* the smaller label (the earlier first pixel) stays the root */
                else uf[a] = b;
                comp[p] = a < b ? a : b;
            } else {
                comp[p] = left >= 0 ? left : up;
            }
        }
    int num = 0; /* links only point to smaller labels: one pass in label order resolves every label */
    for (int i = 0; i < next; i++) {
        if (uf[i] == i) { /* roots in label order = components in order of their first pixel */
            wk->ccluster[num] = first[i];
            rank[i] = num++;
        } else {
            rank[i] = rank[uf[i]];
        }
    }
    for (int p = 0; p < h * w; p++) comp[p] = rank[comp[p]];
    return num;
}

static inline int64_t key_of(const Work *wk, int c, int num) { return wk->sizes[c] * num + c; }

/* One round: every small root merges into its neighbouring root (larger by (size, id)) closest in colour (a root's
 * own cluster colour: exact ties between pieces of one cluster stay exact), ties to the larger id. Returns 0 when no small root has such a neighbour. */
static int merge_round(Work *wk, int num, int edges) {
    for (int c = 0; c < num; c++) {
        wk->low[c] = INFINITY;
        wk->target[c] = -1;
    }
    int kept = 0;
    for (int e = 0; e < edges; e++) {
        int ra = wk->parent[wk->edge_src[e]], rb = wk->parent[wk->edge_dst[e]];
        if (!wk->small[ra] || key_of(wk, rb, num) <= key_of(wk, ra, num)) continue;
        kept = 1;
        float d0 = wk->colour[3 * ra] - wk->colour[3 * rb], d1 = wk->colour[3 * ra + 1] - wk->colour[3 * rb + 1];
        float d2 = wk->colour[3 * ra + 2] - wk->colour[3 * rb + 2];
        double score = (double)(fabsf(d0) + fabsf(d1) + fabsf(d2)); /* L1, as the pixel distance */
        if (score < wk->low[ra] || (score == wk->low[ra] && rb > wk->target[ra])) {
            wk->low[ra] = score;
            wk->target[ra] = rb;
        }
    }
    if (!kept) return 0;
    for (int c = 0; c < num; c++) wk->stepto[c] = wk->target[c] >= 0 ? wk->target[c] : c;
    for (int c = 0; c < num; c++) { /* chains only go up in (size, id): no cycles */
        int r = c;
        while (wk->stepto[r] != r) r = wk->stepto[r];
        wk->stepto[c] = r;
    }
    for (int c = 0; c < num; c++) wk->parent[c] = wk->stepto[wk->parent[c]];
    memset(wk->sizes, 0, sizeof(int64_t) * num);
    for (int c = 0; c < num; c++) wk->sizes[wk->parent[c]] += wk->base[c];
    return 1;
}

/* Components, small ones merged; writes labels 0..n-1 (raster order of each root's first pixel) into wk->comp. */
void slic_connectivity(int h, int w, Work *wk, int min_size) {
    int hw = h * w, num = components(h, w, wk), edges = 0;
    memset(wk->base, 0, sizeof(int32_t) * num);
    for (int i = 0; i < hw; i++) wk->base[wk->comp[i]]++;
    int any = 0;
    for (int c = 0; c < num; c++) {
        wk->parent[c] = c;
        wk->sizes[c] = wk->base[c];
        any |= wk->base[c] < min_size;
        for (int d = 0; d < 3; d++) wk->colour[3 * c + d] = wk->centre[5 * wk->ccluster[c] + d];
    }
    if (any) { /* only edges leaving an initially small component matter: small roots have small members */
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int p = y * w + x, a = wk->comp[p];
                int nb[2] = {x < w - 1 ? p + 1 : -1, y < h - 1 ? p + w : -1};
                for (int j = 0; j < 2; j++) {
                    if (nb[j] < 0 || wk->comp[nb[j]] == a) continue;
                    int b = wk->comp[nb[j]];
                    if (wk->base[a] < min_size) { wk->edge_src[edges] = a; wk->edge_dst[edges++] = b; }
                    if (wk->base[b] < min_size) { wk->edge_src[edges] = b; wk->edge_dst[edges++] = a; }
                }
            }
        for (int round = 0; round < 64; round++) {
            int small = 0;
            for (int c = 0; c < num; c++) small |= (wk->small[c] = wk->sizes[c] > 0 && wk->sizes[c] < min_size);
            if (!small || !merge_round(wk, num, edges)) break;
        }
    }
    int rank = 0; /* roots numbered in id order = raster order of their first pixel */
    for (int c = 0; c < num; c++) wk->stepto[c] = wk->parent[c] == c ? rank++ : -1;
    for (int c = 0; c < num; c++) wk->final[c] = wk->stepto[wk->parent[c]];
}

/* Without connectivity: the used centre ids renumbered 0..n-1 in id order. */
void slic_compact(int hw, int k, Work *wk) {
    for (int i = 0; i < k; i++) wk->stepto[i] = 0;
    for (int i = 0; i < hw; i++) wk->stepto[wk->cluster[i]] = 1;
    for (int i = 0, rank = 0; i < k; i++) wk->stepto[i] = wk->stepto[i] ? rank++ : -1;
    for (int i = 0; i < hw; i++) wk->comp[i] = wk->cluster[i];
    for (int i = 0; i < k; i++) wk->final[i] = wk->stepto[i];
}
