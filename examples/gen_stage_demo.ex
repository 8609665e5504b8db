# A GenStage producer and consumer in plain Elixir, written from GenStage's documented message
# protocol, for machines where the gen_stage package cannot be installed. They speak to
# pybroadway exactly as `use GenStage` stages do (see the README's GenStage walkthrough).
#
#   DemoProducer.start_link(:events, 16)   # a producer registered as :events: 1, 2, ... 16
#   DemoProducer.start_link(:events)       # counting without end (as fast as it is asked)
#   DemoConsumer.start_link({:results, :"py@localhost"}, max_demand: 100)   # prints batches

defmodule DemoProducer do
  use GenServer

  # `count`: the events it produces in all (the demand beyond them waits forever, as a
  # finished GenStage producer's does), so that a consumer printing them in iex stops printing.
  def start_link(name, count \\ :infinity),
    do: GenServer.start_link(__MODULE__, count, name: name)

  def init(count), do: {:ok, %{consumers: %{}, next: 1, last: count}}

  def handle_info({:"$gen_producer", {pid, tag} = from, {:subscribe, _current, _opts}}, state) do
    if Map.has_key?(state.consumers, from) do
      send(pid, {:"$gen_consumer", {self(), tag}, {:cancel, :duplicated_subscription}})
      {:noreply, state}
    else
      {:noreply, put_in(state.consumers[from], Process.monitor(pid))}
    end
  end

  def handle_info({:"$gen_producer", {pid, tag} = from, {:ask, demand}}, state) do
    if Map.has_key?(state.consumers, from) do
      last = min(state.next + demand - 1, state.last)
      events = if last >= state.next, do: Enum.to_list(state.next..last), else: []
      if events != [], do: send(pid, {:"$gen_consumer", {self(), tag}, events})
      {:noreply, %{state | next: state.next + length(events)}}
    else
      send(pid, {:"$gen_consumer", {self(), tag}, {:cancel, :unknown_subscription}})
      {:noreply, state}
    end
  end

  def handle_info({:"$gen_producer", {pid, tag} = from, {:cancel, reason}}, state) do
    {monitor, consumers} = Map.pop(state.consumers, from)
    if monitor, do: Process.demonitor(monitor, [:flush])
    send(pid, {:"$gen_consumer", {self(), tag}, {:cancel, reason}})
    {:noreply, %{state | consumers: consumers}}
  end

  def handle_info({:DOWN, monitor, :process, _, _}, state) do
    consumers = for {from, m} <- state.consumers, m != monitor, into: %{}, do: {from, m}
    {:noreply, %{state | consumers: consumers}}
  end
end

defmodule DemoConsumer do
  use GenServer

  def start_link(producer, opts \\ []), do: GenServer.start_link(__MODULE__, {producer, opts})

  def init({producer, opts}) do
    max = Keyword.get(opts, :max_demand, 1000)
    min = Keyword.get(opts, :min_demand, div(max, 2))
    tag = Process.monitor(producer)
    send(producer, {:"$gen_producer", {self(), tag}, {:subscribe, nil, [max_demand: max]}})
    send(producer, {:"$gen_producer", {self(), tag}, {:ask, max}})
    report = Keyword.get(opts, :report)
    {:ok, %{producer: producer, tag: tag, max: max, min: min, pending: max, report: report}}
  end

  def handle_info({:"$gen_consumer", {producer, tag}, events}, %{tag: tag} = state)
      when is_list(events) do
    # (as_lists: [81, 100] is a list of numbers here, not the charlist 'Qd')
    if state.report,
      do: send(state.report, {:events, events}),
      else: IO.inspect(events, charlists: :as_lists)
    pending = state.pending - length(events)
    if pending <= state.min do
      send(producer, {:"$gen_producer", {self(), tag}, {:ask, state.max - pending}})
      {:noreply, %{state | pending: state.max}}
    else
      {:noreply, %{state | pending: pending}}
    end
  end

  def handle_info({:"$gen_consumer", {_, tag}, {:cancel, reason}}, %{tag: tag} = state),
    do: {:stop, reason, state}

  def handle_info({:DOWN, tag, :process, _, reason}, %{tag: tag} = state),
    do: {:stop, reason, state}
end
