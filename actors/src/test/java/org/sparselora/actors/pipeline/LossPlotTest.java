package org.sparselora.actors.pipeline;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.xml.parsers.DocumentBuilderFactory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparselora.actors.cli.CliRunner;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;

/** loss.svg: well-formed SVG with one point per metrics row, dense and sparse apart; written when a train job ends. */
class LossPlotTest {

    @TempDir
    Path dir;

    static Document parse(Path svg) throws Exception {
        DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
        f.setNamespaceAware(true);
        return f.newDocumentBuilder().parse(svg.toFile());
    }

    /** The marker elements (circles and the crosses of non-finite losses) of class "point …". */
    static List<Element> points(Document d) {
        List<Element> out = new ArrayList<>();
        for (String tag : new String[] {"circle", "path"}) {
            NodeList nl = d.getElementsByTagNameNS("http://www.w3.org/2000/svg", tag);
            for (int i = 0; i < nl.getLength(); i++) {
                Element e = (Element) nl.item(i);
                if (e.getAttribute("class").startsWith("point")) out.add(e);
            }
        }
        return out;
    }

    @Test
    void onePointPerRowInTwoColours() throws Exception {
        List<String> rows = new ArrayList<>();
        for (int s = 1; s <= 37; s++) {
            String loss = s == 20 ? "\"NaN\"" : Double.toString(4.0 * Math.exp(-s / 15.0) + 0.5);
            rows.add("{\"step\":" + s + ",\"loss\":" + loss + ",\"lr\":1.0E-3,\"sparse\":" + (s > 9) + ",\"flops\":10,\"dense_flops\":20,"
                    + "\"predictor_flops\":1,\"ms\":3.5,\"tokens\":64}");
        }
        Files.write(dir.resolve(MetricsLog.FILE), rows);
        Path svg = LossPlot.write(dir, "job <a&b>");
        assertEquals(dir.resolve("loss.svg"), svg);
        assertFalse(Files.exists(dir.resolve("loss.svg.tmp")));
        Document d = parse(svg);
        assertEquals("svg", d.getDocumentElement().getLocalName());
        List<Element> pts = points(d);
        assertEquals(37, pts.size());
        long dense = pts.stream().filter(e -> e.getAttribute("class").equals("point dense")).count();
        long sparse = pts.stream().filter(e -> e.getAttribute("class").equals("point sparse")).count();
        long bad = pts.stream().filter(e -> e.getAttribute("class").equals("point nonfinite")).count();
        assertEquals(9, dense);
        assertEquals(27, sparse);
        assertEquals(1, bad);
        for (Element e : pts) {
            if (e.getAttribute("class").equals("point dense")) assertEquals(LossPlot.DENSE_COLOUR, e.getAttribute("fill"));
            if (e.getAttribute("class").equals("point sparse")) assertEquals(LossPlot.SPARSE_COLOUR, e.getAttribute("fill"));
        }
        // lower loss is higher up the page: y grows as the loss falls
        Element first = pts.get(0), last = pts.get(35);
        assertTrue(Double.parseDouble(first.getAttribute("cy")) < Double.parseDouble(last.getAttribute("cy")));
        assertTrue(Double.parseDouble(first.getAttribute("cx")) < Double.parseDouble(last.getAttribute("cx")));
        String text = Files.readString(svg);
        assertTrue(text.contains("dense step") && text.contains("sparse step") && text.contains(">step<") && text.contains("loss (nats)"), "legend and axis labels");
        assertTrue(text.contains("class=\"x-axis\"") && text.contains("class=\"y-axis\"") && text.contains("class=\"tick\""), "axes with ticks");
        assertTrue(text.contains("job &lt;a&amp;b&gt;"), "the title is escaped");
    }

    @Test
    void noMetricsNoPlot() throws Exception {
        assertNull(LossPlot.write(dir, "x"));
        Files.writeString(dir.resolve(MetricsLog.FILE), "");
        assertNull(LossPlot.write(dir, "x"));
        assertFalse(Files.exists(dir.resolve(LossPlot.FILE)));
    }

    @Test
    void aTrainingJobEndsWithItsLossPlot() throws Exception {
        Path job = CliRunner.jobFile(dir, "plot", 6, 1, 0, 0);
        CliRunner.Result r = CliRunner.run("train", "--config", job.toString());
        assertEquals(0, r.code(), r.err());
        Path out = dir.resolve("out-plot");
        long rows = Files.readAllLines(out.resolve(MetricsLog.FILE)).stream().filter(l -> !l.isBlank()).count();
        assertEquals(6, rows);
        List<Element> pts = points(parse(out.resolve(LossPlot.FILE)));
        assertEquals(rows, pts.size());
        // sparse from step ⌈0.25·6⌉ + 1: both colours appear
        assertTrue(pts.stream().anyMatch(e -> e.getAttribute("class").equals("point dense")));
        assertTrue(pts.stream().anyMatch(e -> e.getAttribute("class").equals("point sparse")));
    }
}
