package faults

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// dumpHistory writes the history as tab-separated files into dir, so that a failure
// can be studied offset by offset next to the broker logs. Times are UTC.
func dumpHistory(dir string, h *history, recs []faultRecord, leaders []leaderChange) error {
	ts := func(t time.Time) string { return t.UTC().Format("15:04:05.000000") }
	write := func(name string, fill func(w *bufio.Writer)) error {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		fill(w)
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if err := write("acks.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "writer\tseq\tpartition\toffset\tsent\tacked")
		for _, a := range h.acks {
			fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%s\t%s\n", a.writer, a.seq, a.partition, a.offset, ts(a.sentAt), ts(a.at))
		}
	}); err != nil {
		return err
	}
	if err := write("batches.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "writer\tbroker\tpartition\trecords\tacked")
		for _, b := range h.batches {
			fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%s\n", b.writer, b.broker, b.partition, b.records, ts(b.at))
		}
	}); err != nil {
		return err
	}
	if err := write("failures.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "writer\tseq\tpartition\tat\terror")
		for _, f := range h.failures {
			fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\n", f.writer, f.seq, f.partition, ts(f.at), f.err)
		}
	}); err != nil {
		return err
	}
	for i, seq := range h.ordered {
		if err := write(fmt.Sprintf("reader-%d.tsv", i), func(w *bufio.Writer) {
			fmt.Fprintln(w, "partition\toffset\tvalue\tpolled")
			for _, r := range seq {
				fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", r.partition, r.offset, r.value, ts(r.at))
			}
		}); err != nil {
			return err
		}
	}
	if err := write("group-reads.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "partition\toffset\tvalue\tpolled")
		for _, r := range h.unordered {
			fmt.Fprintf(w, "%d\t%d\t%s\t%s\n", r.partition, r.offset, r.value, ts(r.at))
		}
	}); err != nil {
		return err
	}
	if err := write("commits.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "kind\tpartition\toffset\tat")
		for _, c := range h.commits {
			fmt.Fprintf(w, "observed\t%d\t%d\t%s\n", c.partition, c.offset, ts(c.at))
		}
		for _, c := range h.commitAcks {
			fmt.Fprintf(w, "acked\t%d\t%d\t%s\n", c.partition, c.offset, ts(c.at))
		}
	}); err != nil {
		return err
	}
	if err := write("leaders.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "at\tpartition\tleader\tepoch")
		for _, l := range leaders {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", ts(l.at), l.partition, l.leader, l.epoch)
		}
	}); err != nil {
		return err
	}
	return write("faults.tsv", func(w *bufio.Writer) {
		fmt.Fprintln(w, "kind\tnode\tinjected\thealed\thold\tnote\terror")
		for _, r := range recs {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%v\n", r.kind, r.node, ts(r.injected), ts(r.healed), r.hold, r.note, r.err)
		}
	})
}
