package org.sparselora.actors.job;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.sparselora.actors.engine.LlamaEngineProvider;
import org.sparselora.proto.control.JobSpec;

/** The device grammar and the placement of a job's workers on GPUs, and its validation in job specs. */
class DevicesTest {

    @Test
    void placesWorkersOnConsecutiveGpusOrOnTheListedOnes() {
        assertFalse(Devices.parse("cpu").gpu());
        Devices.Device cuda = Devices.parse("cuda");
        assertEquals(0, cuda.gpuOf(0, 2));
        assertEquals(1, cuda.gpuOf(1, 2));
        Devices.Device from2 = Devices.parse("cuda:2");
        assertEquals(2, from2.gpuOf(0, 3));
        assertEquals(4, from2.gpuOf(2, 3));
        assertArrayEquals(new int[] {2, 3, 4}, from2.gpusUsed(3));
        // one GPU per worker, repeatable: two workers sharing GPU 0
        Devices.Device shared = Devices.parse("cuda:0,0");
        assertTrue(shared.explicit());
        assertEquals(0, shared.gpuOf(0, 2));
        assertEquals(0, shared.gpuOf(1, 2));
        assertArrayEquals(new int[] {0}, shared.gpusUsed(2));
        Devices.Device mixed = Devices.parse("cuda:3,1,3");
        assertArrayEquals(new int[] {3, 1, 3}, new int[] {mixed.gpuOf(0, 3), mixed.gpuOf(1, 3), mixed.gpuOf(2, 3)});
        assertArrayEquals(new int[] {1, 3}, mixed.gpusUsed(3));
        assertThrows(IllegalArgumentException.class, () -> shared.gpuOf(0, 3));
        assertThrows(IllegalStateException.class, () -> Devices.parse("cpu").gpuOf(0, 1));
    }

    @Test
    void malformedDevicesAreRejectedQuotingTheString() {
        for (String bad : new String[] {"", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:0,", "cuda:,0", "cuda:123", "CPU", "cuda:0;1", " cuda"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Devices.parse(bad), bad);
            assertTrue(e.getMessage().contains("'" + bad + "'"), e.getMessage());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Devices.forJob("cuda:0,0", 3));
        assertTrue(e.getMessage().contains("lists 2 GPUs but the job has 3 workers"), e.getMessage());
        assertEquals(1, Devices.forJob("cuda:0,0", 2).gpusUsed(2).length);
        assertEquals(2, Devices.forJob("cuda:5", 2).gpusUsed(2).length);   // a single ordinal is the first GPU, whatever the worker count
    }

    @Test
    void aJobSpecNamesTheDeviceFieldWhenTheListDoesNotMatchTheWorkers() {
        JobSpec ok = JobSpec.newBuilder().setModel("m").setData(org.sparselora.proto.control.DataSpec.newBuilder().setPath("d"))
                .setSteps(2).setBatchSize(4).setSeqLen(8).setWorkers(2).setOutputDir("o").setDevice("cuda:0,0").build();
        JobSpecs.validate(JobSpecs.withDefaults(ok));
        JobSpecException e = assertThrows(JobSpecException.class, () -> JobSpecs.validate(JobSpecs.withDefaults(ok.toBuilder().setDevice("cuda:0,0,0").build())));
        assertEquals("device", e.field());
        assertTrue(e.getMessage().startsWith("device: lists 3 GPUs but the job has 2 workers"), e.getMessage());
        e = assertThrows(JobSpecException.class, () -> JobSpecs.validate(JobSpecs.withDefaults(ok.toBuilder().setDevice("tpu").build())));
        assertEquals("device", e.field());
    }

    /** Holds on both machines: without CUDA the reason is given; with it, a GPU past the visible count is named. */
    @Test
    void aJobOnAMissingGpuFailsWhenItOpensNeverFallingBackToTheCpu() {
        org.sparselora.cuda.Gpu.Availability a = org.sparselora.cuda.Gpu.check();
        int missing = a.available() ? a.deviceCount() : 0;
        JobSpecException e = assertThrows(JobSpecException.class, () -> LlamaEngineProvider.checkGpus(Devices.parse("cuda:" + missing), 1));
        assertEquals("device", e.field());
        assertTrue(e.getMessage().contains(a.available() ? "GPU " + missing + " does not exist" : "no usable CUDA GPU"), e.getMessage());
        if (a.available()) {
            // two workers from the last GPU: the second one is missing, and the message says how to share one
            e = assertThrows(JobSpecException.class, () -> LlamaEngineProvider.checkGpus(Devices.parse("cuda:" + (missing - 1)), 2));
            assertTrue(e.getMessage().contains("cuda:0,0"), e.getMessage());
            LlamaEngineProvider.checkGpus(Devices.parse("cuda:0,0"), 2);
        }
    }
}
