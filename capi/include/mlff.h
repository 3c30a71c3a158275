/*
 * mlff.h: the C interface of mlff (library libmlff_capi.so, crate capi/).
 *
 * Load a model onto a device, then evaluate sets of atoms: energy, forces on every
 * atom, per-atom energies, the virial and per-atom virials. Units: Å, eV, eV/Å.
 *
 * Each atom has an energy weight w_i (default 1): the call computes the energy
 * E = Σ_i w_i E_i and its exact gradient over all atoms. A domain-decomposed MD code
 * passes its owned atoms with w = 1 and its ghost atoms with w = 0; the forces on the
 * ghosts are then this rank's contributions, to be summed onto their owners.
 *
 * Errors: every function that can fail returns an mlff_status; on failure
 * mlff_last_error() gives the message. No function aborts the process or lets a Rust
 * panic cross into C: an internal error comes back as MLFF_ERROR_INTERNAL.
 * Null pointers where an input is required are MLFF_ERROR_ARGUMENT. Array sizes are
 * implied by num_atoms: the caller owns every array and must make it that long.
 *
 * Threads: functions may be called from any thread. Concurrent calls on one model
 * are safe; on a GPU they run one after the other.
 */
#ifndef MLFF_H
#define MLFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Incremented on every incompatible change of this header. */
#define MLFF_CAPI_VERSION 1

typedef enum mlff_status {
    MLFF_OK = 0,
    /* A null pointer, a negative atomic number, too many atoms, an unparsable
       device string, a buffer too small. */
    MLFF_ERROR_ARGUMENT = 1,
    /* Input the model cannot compute with: an element it does not know, a
       non-finite position or weight, atoms on top of each other, a singular cell. */
    MLFF_ERROR_INPUT = 2,
    /* The model file is missing, unreadable, inconsistent or of an unknown kind. */
    MLFF_ERROR_MODEL = 3,
    /* No usable GPU, a CUDA error, or the CPU thread pool could not start. */
    MLFF_ERROR_DEVICE = 4,
    /* Valid, but this build cannot do it (e.g. a feature width the GPU kernels lack). */
    MLFF_ERROR_UNSUPPORTED = 5,
    /* A bug in mlff, caught at the boundary; please report the message. */
    MLFF_ERROR_INTERNAL = 6
} mlff_status;

/* A model on a device (opaque). */
typedef struct mlff_model mlff_model;

/* The atoms of one evaluation. */
typedef struct mlff_system {
    size_t num_atoms;
    const int32_t *atomic_numbers; /* num_atoms */
    const double *positions;       /* 3 × num_atoms: x, y, z of each atom (Å) */
    const double *cell;            /* 9: lattice vectors as rows (Å), or NULL: no cell */
    const int32_t *pbc;            /* 3 flags (nonzero: periodic along that vector;
                                      needs cell), or NULL: not periodic */
    const double *energy_weights;  /* num_atoms weights w_i, or NULL: all 1 */
} mlff_system;

/* What one evaluation returns. The arrays are the caller's; NULL skips an output
   (atom_virials NULL: they are not computed). */
typedef struct mlff_results {
    double energy;         /* Σ_i w_i E_i (eV) */
    double virial[9];      /* W_ab = −Σ_edges r_a ∂E/∂r_b (eV), row-major; without a
                              cell W = Σ_i R_i ⊗ F_i; with one, the stress is −W/V */
    double *forces;        /* 3 × num_atoms: −∂E/∂R (eV/Å) */
    double *atom_energies; /* num_atoms: w_i E_i (eV) */
    double *atom_virials;  /* 9 × num_atoms, row-major: each atom's half of the virial
                              of every edge it is in; they sum to virial */
} mlff_results;

/* The library's version, e.g. "0.1.0" (static storage). */
const char *mlff_version(void);

/* The message of this thread's last failed call ("" if none). Valid until the next
   failed call on this thread. */
const char *mlff_last_error(void);

/* CUDA devices usable by this process (0 without a driver or device). */
int32_t mlff_gpu_count(void);

/* Z of an element symbol as written ("H", "Cl"), or 0 if there is no such element. */
int32_t mlff_atomic_number(const char *symbol);

/* Loads a model file (safetensors; "default": the bundled GFN2-xTB student) onto
   `device`: "cpu" (MLFF_NUM_THREADS threads, default one per core), "cpu:N" (N
   threads), "gpu" (= "gpu:0"), "gpu:N", or "auto"/NULL (GPU 0 if usable, else the
   CPU; MLFF_DEVICE overrides). On success *model is a new handle for
   mlff_model_free; on failure it is set to NULL. */
mlff_status mlff_model_load(const char *path, const char *device, mlff_model **model);

/* Frees a handle (NULL: nothing happens). */
void mlff_model_free(mlff_model *model);

/* The model's cutoff radius rc (Å) and its number of message-passing blocks T: an
   atom's energy depends on the atoms within T × rc. */
mlff_status mlff_model_cutoff(const mlff_model *model, double *cutoff);
mlff_status mlff_model_num_interactions(const mlff_model *model, int32_t *blocks);

/* MLFF_OK if the model can compute atoms of element Z, else MLFF_ERROR_INPUT with
   the reason (e.g. the elements it was trained on). */
mlff_status mlff_model_check_element(const mlff_model *model, int32_t atomic_number);

/* One line naming the device, e.g. "GPU 0 (NVIDIA H200)" or "CPU (16 threads)",
   written NUL-terminated into buffer (MLFF_ERROR_ARGUMENT if size is too small). */
mlff_status mlff_model_device(const mlff_model *model, char *buffer, size_t size);

/* Evaluates `system` (see mlff_results for what is written). */
mlff_status mlff_evaluate(mlff_model *model, const mlff_system *system, mlff_results *results);

#ifdef __cplusplus
}
#endif

#endif /* MLFF_H */
