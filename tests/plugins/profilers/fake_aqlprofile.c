/* A stand-in for libhsa-amd-aqlprofile64 used by the tests: implements the v2 entry points
   the plugin calls with simple, checkable behaviour. Not a profiler. */
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <stddef.h>

typedef int hsa_status_t;
typedef struct { uint64_t handle; } handle_t;
typedef struct { uint32_t major, minor, patch; } version_t;
typedef struct { const char* gfxip; uint32_t xcc, se, cu, sa, domain, location; } agent_info_t;
typedef struct { uint32_t block_index, event_id, flags; int block_name; } event_t;
typedef struct { handle_t agent; const event_t* events; uint32_t count; } profile_t;
typedef struct { uint8_t bytes[64]; } pkt_t;
typedef struct { pkt_t start, stop, read; } packets_t;
typedef hsa_status_t (*alloc_t)(void**, uint64_t, uint32_t, void*);
typedef void (*dealloc_t)(void*, void*);
typedef hsa_status_t (*copy_t)(void*, const void*, size_t, void*);
typedef hsa_status_t (*data_t)(event_t, uint64_t, uint64_t, void*);

#ifndef FAKE_MAJOR
#define FAKE_MAJOR 1
#endif

static char last_gfxip[32];
static event_t saved[16];
static uint32_t saved_count;

hsa_status_t aqlprofile_get_version(version_t* v) {
  if (!v) return 0x1001;
  v->major = FAKE_MAJOR; v->minor = 2; v->patch = 3; return 0;
}
hsa_status_t aqlprofile_register_agent_info(handle_t* out, const void* info, int version) {
  const agent_info_t* a = (const agent_info_t*)info;
  if (version != 2) return 0x1001;
  strncpy(last_gfxip, a->gfxip, sizeof(last_gfxip) - 1);
  out->handle = 0x1000 + a->cu;
  return 0;
}
hsa_status_t aqlprofile_validate_pmc_event(handle_t agent, const event_t* e, bool* ok) {
  /* "gfx9" agents (handle from cu count 9) reject SQ_BUSY_CYCLES (event 3) */
  *ok = e->block_name == 6 && !(agent.handle == 0x1009 && e->event_id == 3);
  return 0;
}
hsa_status_t aqlprofile_pmc_create_packets(handle_t* h, packets_t* p, profile_t prof,
                                           alloc_t alloc, dealloc_t dealloc, copy_t copy,
                                           void* ud) {
  void* mem = 0;
  if (alloc(&mem, 256, 3, ud) != 0 || !mem) return 0x1000;
  uint8_t cmd[16];
  memset(cmd, 0xAB, sizeof(cmd));
  copy(mem, cmd, sizeof(cmd), ud);
  memset(p, 0, sizeof(*p));
  p->start.bytes[0] = 0x01; p->stop.bytes[0] = 0x02; p->read.bytes[0] = 0x03;
  memcpy(&p->start.bytes[8], &mem, sizeof(mem));
  saved_count = prof.count < 16 ? prof.count : 16;
  memcpy(saved, prof.events, saved_count * sizeof(event_t));
  h->handle = 77;
  (void)dealloc;
  return 0;
}
void aqlprofile_pmc_delete_packets(handle_t h) { (void)h; saved_count = 0; }
hsa_status_t aqlprofile_pmc_iterate_data(handle_t h, data_t cb, void* ud) {
  if (h.handle != 77) return 0x1001;
  for (uint32_t i = 0; i < saved_count; ++i) cb(saved[i], i, 1000 + saved[i].event_id, ud);
  return 0;
}
#ifdef WITH_ATT
hsa_status_t aqlprofile_att_create_packets(void) { return 0x1000; }
hsa_status_t aqlprofile_att_iterate_data(void) { return 0x1000; }
void aqlprofile_att_delete_packets(void) {}
#endif
