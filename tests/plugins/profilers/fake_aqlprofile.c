/* A stand-in for libhsa-amd-aqlprofile64 used by the tests: implements the v2 entry points
   the plugin calls with simple, checkable behaviour. Not a profiler.

   Its packets are real AQL PM4-IB vendor packets, as the library builds them: the
   ib_jump_cmd (byte 4) is a type-3 INDIRECT_BUFFER to a command buffer the library
   allocated through the caller's callback, dw_cnt_remain 0xA, header and completion
   signal left to the queue. The command buffers hold real PM4: NOPs, and in each packet
   set's read (PMC) or stop (ATT) buffer a COPY_DATA of the 64-bit GPU clock into the set's
   result word. Reading data back requires that word to be nonzero: a packet set whose
   read/stop packet never ran reports an error instead of values. Values are
   1000 + event id per counter (never measured); an ATT trace is one shader engine's bytes
   "fake-att" + u32 parameter count + u32 buffer size parameter. */
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

typedef int hsa_status_t;
typedef struct { uint64_t handle; } handle_t;
typedef struct { uint32_t major, minor, patch; } version_t;
typedef struct { const char* gfxip; uint32_t xcc, se, cu, sa, domain, location; } agent_info_t;
typedef struct { uint32_t block_index, event_id, flags; int block_name; } event_t;
typedef struct { handle_t agent; const event_t* events; uint32_t count; } profile_t;
typedef struct { int name; uint32_t value; } att_parameter_t;
typedef struct { uint64_t hsa_agent; const att_parameter_t* parameters; uint32_t count; } att_profile_t;
typedef struct { uint8_t bytes[64]; } pkt_t;
typedef struct { pkt_t start, stop, read; } packets_t;
typedef struct { pkt_t start, stop; } att_packets_t;
typedef hsa_status_t (*alloc_t)(void**, uint64_t, uint32_t, void*);
typedef void (*dealloc_t)(void*, void*);
typedef hsa_status_t (*copy_t)(void*, const void*, size_t, void*);
typedef hsa_status_t (*data_t)(event_t, uint64_t, uint64_t, void*);
typedef hsa_status_t (*att_data_t)(uint32_t, void*, uint64_t, void*);

#ifndef FAKE_MAJOR
#define FAKE_MAJOR 1
#endif

#define STATUS_ERROR 0x1000
#define STATUS_INVALID_ARGUMENT 0x1001
#define PM4_NOP 0x10
#define PM4_COPY_DATA 0x40
#define PM4_INDIRECT_BUFFER 0x3F
/* COPY_DATA: source GPU clock (9), destination memory (5 << 8), 64-bit count (1 << 16) */
#define COPY_CLOCK_TO_MEMORY (9u | (5u << 8) | (1u << 16))
#define PARAM_ATT_BUFFER_SIZE 10
/* dwords per command buffer: each of start/stop/read gets one region of this size */
#define REGION_DWORDS 8

static char last_gfxip[32];

/* One packet set: the events it counts and its device memory (three command-buffer regions
   then the 8-byte result word). */
typedef struct {
  uint32_t magic;
  event_t events[16];
  uint32_t count;
  uint32_t* memory;
  volatile uint64_t* result;
  uint32_t parameter_count, buffer_size;
} set_t;
#define PMC_MAGIC 0x504d4353u
#define ATT_MAGIC 0x41545453u

static uint32_t type3(uint32_t opcode, uint32_t body) {
  return (3u << 30) | ((body - 1u) << 16) | (opcode << 8);
}

/* A region of two NOPs, or a COPY_DATA of the clock to the set's result word. */
static void write_region(uint32_t* region, bool copy_clock, volatile uint64_t* result) {
  memset(region, 0, REGION_DWORDS * 4);
  if (copy_clock) {
    uint64_t address = (uint64_t)(uintptr_t)result;
    region[0] = type3(PM4_COPY_DATA, 5);
    region[1] = COPY_CLOCK_TO_MEMORY;
    region[2] = 0;
    region[3] = 0;
    region[4] = (uint32_t)(address & 0xFFFFFFF8u);
    region[5] = (uint32_t)(address >> 32);
    region[6] = type3(PM4_NOP, 1);
  } else {
    region[0] = type3(PM4_NOP, 1);
    region[2] = type3(PM4_NOP, 5);
  }
}

/* The 64-byte AQL PM4-IB packet jumping to one region (header and signal left zero). */
static void write_packet(pkt_t* p, const uint32_t* region) {
  uint64_t address = (uint64_t)(uintptr_t)region;
  uint32_t jump[4] = {
      (3u << 30) | (PM4_INDIRECT_BUFFER << 8) | (2u << 16),
      (uint32_t)address,
      (uint32_t)(address >> 32),
      REGION_DWORDS | (1u << 23),
  };
  uint32_t remain = 0xA;
  memset(p, 0, sizeof(*p));
  p->bytes[2] = 1; /* AMD_FORMAT PM4_IB */
  memcpy(&p->bytes[4], jump, sizeof(jump));
  memcpy(&p->bytes[20], &remain, sizeof(remain));
}

static set_t* new_set(uint32_t magic, alloc_t alloc, void* ud) {
  void* mem = 0;
  if (alloc(&mem, 4 * REGION_DWORDS * 4, 3, ud) != 0 || !mem) return 0;
  set_t* s = (set_t*)calloc(1, sizeof(set_t));
  s->magic = magic;
  s->memory = (uint32_t*)mem;
  s->result = (volatile uint64_t*)(s->memory + 3 * REGION_DWORDS);
  *s->result = 0;
  return s;
}

static set_t* from_handle(handle_t h, uint32_t magic) {
  set_t* s = (set_t*)(uintptr_t)h.handle;
  return s && s->magic == magic ? s : 0;
}

hsa_status_t aqlprofile_get_version(version_t* v) {
  if (!v) return STATUS_INVALID_ARGUMENT;
  v->major = FAKE_MAJOR; v->minor = 2; v->patch = 3; return 0;
}
hsa_status_t aqlprofile_register_agent_info(handle_t* out, const void* info, int version) {
  const agent_info_t* a = (const agent_info_t*)info;
  if (version != 2) return STATUS_INVALID_ARGUMENT;
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
  (void)dealloc; (void)copy;
  set_t* s = new_set(PMC_MAGIC, alloc, ud);
  if (!s) return STATUS_ERROR;
  s->count = prof.count < 16 ? prof.count : 16;
  memcpy(s->events, prof.events, s->count * sizeof(event_t));
  uint32_t* start = s->memory;
  uint32_t* stop = s->memory + REGION_DWORDS;
  uint32_t* read = s->memory + 2 * REGION_DWORDS;
  write_region(start, false, 0);
  write_region(stop, false, 0);
  write_region(read, true, s->result);
  write_packet(&p->start, start);
  write_packet(&p->stop, stop);
  write_packet(&p->read, read);
  h->handle = (uint64_t)(uintptr_t)s;
  return 0;
}
void aqlprofile_pmc_delete_packets(handle_t h) {
  set_t* s = from_handle(h, PMC_MAGIC);
  if (s) { s->magic = 0; free(s); }
}
hsa_status_t aqlprofile_pmc_iterate_data(handle_t h, data_t cb, void* ud) {
  set_t* s = from_handle(h, PMC_MAGIC);
  if (!s) return STATUS_INVALID_ARGUMENT;
  if (*s->result == 0) return STATUS_ERROR; /* the read packet never ran */
  *s->result = 0;
  for (uint32_t i = 0; i < s->count; ++i) cb(s->events[i], i, 1000 + s->events[i].event_id, ud);
  return 0;
}
#ifdef WITH_ATT
hsa_status_t aqlprofile_att_create_packets(handle_t* h, att_packets_t* p, att_profile_t prof,
                                           alloc_t alloc, dealloc_t dealloc, copy_t copy,
                                           void* ud) {
  (void)dealloc; (void)copy;
  if (prof.hsa_agent == 0) return STATUS_INVALID_ARGUMENT;
  set_t* s = new_set(ATT_MAGIC, alloc, ud);
  if (!s) return STATUS_ERROR;
  s->parameter_count = prof.count;
  for (uint32_t i = 0; i < prof.count; ++i)
    if (prof.parameters[i].name == PARAM_ATT_BUFFER_SIZE) s->buffer_size = prof.parameters[i].value;
  uint32_t* start = s->memory;
  uint32_t* stop = s->memory + REGION_DWORDS;
  write_region(start, false, 0);
  write_region(stop, true, s->result);
  write_packet(&p->start, start);
  write_packet(&p->stop, stop);
  h->handle = (uint64_t)(uintptr_t)s;
  return 0;
}
hsa_status_t aqlprofile_att_iterate_data(handle_t h, att_data_t cb, void* ud) {
  set_t* s = from_handle(h, ATT_MAGIC);
  if (!s) return STATUS_INVALID_ARGUMENT;
  if (*s->result == 0) return STATUS_ERROR; /* the stop packet never ran */
  *s->result = 0;
  uint8_t data[16];
  memcpy(data, "fake-att", 8);
  memcpy(data + 8, &s->parameter_count, 4);
  memcpy(data + 12, &s->buffer_size, 4);
  return cb(0, data, sizeof(data), ud);
}
void aqlprofile_att_delete_packets(handle_t h) {
  set_t* s = from_handle(h, ATT_MAGIC);
  if (s) { s->magic = 0; free(s); }
}
#endif
