package bench

import (
	"bytes"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotMixed draws, for each step of the ladder, the p50, p99 and p99.9 of
// every operation and of the write→read lag, on a log scale, side by side,
// and saves the PNG at path.
func plotMixed(res MixedResult, path string) error {
	percentiles := []struct {
		title string
		get   func(OpSummary) float64
	}{
		{"p50", func(o OpSummary) float64 { return o.P50 }},
		{"p99", func(o OpSummary) float64 { return o.P99 }},
		{"p99.9", func(o OpSummary) float64 { return o.P999 }},
	}
	ticks := make([]plot.Tick, len(res.Ladder))
	for i, s := range res.Ladder {
		ticks[i] = plot.Tick{Value: float64(i), Label: s.Offered.String()}
	}
	row := make([]*plot.Plot, len(percentiles))
	for k, pc := range percentiles {
		p := plot.New()
		p.Title.Text = pc.title + " latency from intended start"
		p.X.Label.Text = "offered writes/s + reads/s"
		p.Y.Label.Text = "ms (log)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Legend.Top = true
		p.Legend.Left = true
		var lines []any
		for _, op := range append(append(append([]string{}, readOps...), writeOps...), "lag") {
			pts := plotter.XYs{}
			for i, s := range res.Ladder {
				o, ok := s.Ops[op]
				if op == "lag" {
					o, ok = s.Lag, s.Lag.Offered > 0
				}
				if ok {
					// A log scale has no zero.
					pts = append(pts, plotter.XY{X: float64(i), Y: math.Max(pc.get(o), 0.01)})
				}
			}
			if len(pts) > 0 {
				lines = append(lines, op, pts)
			}
		}
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return err
		}
		row[k] = p
	}
	img := vgimg.New(vg.Length(len(row))*6*vg.Inch, 5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return err
	}
	return writeFile(path, buf.Bytes())
}
