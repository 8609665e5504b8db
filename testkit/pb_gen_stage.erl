%% Stand-ins for GenStage's producer and consumer, in plain Erlang, written from GenStage's
%% documented message protocol (the real gen_stage cannot be installed here). The tests and
%% benchmarks run them on OTP 25, OTP 28 and Elixir nodes.
%%
%% producer(Name, Opts): a registered producer that makes events on demand (no buffer):
%%   Opts: events => counter (Label, I) | {binary, Bin}; label => Term; limit => N | infinity
%% consumer(To, Opts): monitors To, subscribes, asks max_demand, re-asks at min_demand:
%%   Opts: max_demand, min_demand, cancel (permanent | transient | temporary), partition,
%%         keep => boolean (keep the events for stats), report => Pid (gets
%%         {pb_ended, Self, Reason} when a subscription ends, {pb_done, Self, N, Micros}
%%         when expect => N events arrived), name => Atom.
%% stats(Pid) -> map of counters (and the events kept); cancel(Consumer, Reason).
-module(pb_gen_stage).
-export([producer/2, consumer/2, stats/1, cancel/2, cancel_all/2, wait_ended/1]).

producer(Name, Opts) ->
    Parent = self(),
    Pid = spawn(fun() ->
        register(Name, self()),
        Parent ! {pb_ready, self()},
        producer_loop(#{consumers => #{}, next => 1, asked => 0, sent => 0,
                        events => maps:get(events, Opts, counter),
                        label => maps:get(label, Opts, Name),
                        limit => maps:get(limit, Opts, infinity)})
    end),
    receive {pb_ready, Pid} -> Pid end.

producer_loop(S = #{consumers := Cs}) ->
    receive
        {'$gen_producer', {Pid, Tag} = From, {subscribe, _Current, _Options}} ->
            case maps:is_key(From, Cs) of
                true ->
                    Pid ! {'$gen_consumer', {self(), Tag}, {cancel, duplicated_subscription}},
                    producer_loop(S);
                false ->
                    Mon = erlang:monitor(process, Pid),
                    producer_loop(S#{consumers := Cs#{From => Mon}})
            end;
        {'$gen_producer', {Pid, Tag} = From, {ask, N}} when is_integer(N), N > 0 ->
            case maps:is_key(From, Cs) of
                false ->
                    Pid ! {'$gen_consumer', {self(), Tag}, {cancel, unknown_subscription}},
                    producer_loop(S);
                true ->
                    producer_loop(produce(Pid, Tag, N, S#{asked := maps:get(asked, S) + N}))
            end;
        {'$gen_producer', {Pid, Tag} = From, {cancel, Reason}} ->
            case maps:take(From, Cs) of
                error -> producer_loop(S);
                {Mon, Rest} ->
                    erlang:demonitor(Mon, [flush]),
                    Pid ! {'$gen_consumer', {self(), Tag}, {cancel, Reason}},
                    producer_loop(S#{consumers := Rest})
            end;
        {'DOWN', Mon, process, _, _} ->
            producer_loop(S#{consumers := maps:filter(fun(_, M) -> M =/= Mon end, Cs)});
        {pb_cancel_all, Reason} ->
            [begin erlang:demonitor(M, [flush]),
                   P ! {'$gen_consumer', {self(), T}, {cancel, Reason}} end
             || {{P, T}, M} <- maps:to_list(Cs)],
            producer_loop(S#{consumers := #{}});
        {pb_stats, From, Ref} ->
            From ! {Ref, maps:without([events], S#{consumers := maps:size(Cs)})},
            producer_loop(S)
    end.

produce(Pid, Tag, N, S = #{next := Next, sent := Sent, limit := Limit}) ->
    K = case Limit of infinity -> N; _ -> max(0, min(N, Limit - Sent)) end,
    case K of
        0 -> S;
        _ ->
            Events = case maps:get(events, S) of
                counter -> Label = maps:get(label, S),
                           [{Label, I} || I <- lists:seq(Next, Next + K - 1)];
                {binary, Bin} -> lists:duplicate(K, Bin)
            end,
            Pid ! {'$gen_consumer', {self(), Tag}, Events},
            S#{next := Next + K, sent := Sent + K}
    end.

consumer(To, Opts) ->
    Max = maps:get(max_demand, Opts, 1000),
    Min = maps:get(min_demand, Opts, Max div 2),
    Mode = maps:get(cancel, Opts, permanent),
    Parent = self(),
    Pid = spawn(fun() ->
        case maps:find(name, Opts) of {ok, Name} -> register(Name, self()); error -> ok end,
        Tag = erlang:monitor(process, To),
        Extra = case maps:find(partition, Opts) of
                    {ok, P} -> [{partition, P}];
                    error -> []
                end,
        To ! {'$gen_producer', {self(), Tag},
              {subscribe, nil, [{max_demand, Max}, {min_demand, Min}, {cancel, Mode} | Extra]}},
        To ! {'$gen_producer', {self(), Tag}, {ask, Max}},
        Parent ! {pb_ready, self()},
        consumer_loop(#{to => To, tag => Tag, producer => To, max => Max, min => Min,
                        mode => Mode, pending => Max, asked => Max, received => 0,
                        violations => 0, batches => 0, kept => [],
                        keep => maps:get(keep, Opts, true),
                        report => maps:get(report, Opts, undefined),
                        expect => maps:get(expect, Opts, undefined),
                        started => erlang:monotonic_time(microsecond)})
    end),
    receive {pb_ready, Pid} -> Pid end.

consumer_loop(S = #{tag := Tag}) ->
    receive
        {'$gen_consumer', {Producer, Tag}, Events} when is_list(Events) ->
            N = length(Events),
            Pending = maps:get(pending, S) - N,
            Violations = maps:get(violations, S) + case Pending < 0 of true -> 1; false -> 0 end,
            Received = maps:get(received, S) + N,
            Kept = case maps:get(keep, S) of
                       true -> lists:reverse(Events, maps:get(kept, S));
                       false -> []
                   end,
            S1 = S#{pending := max(Pending, 0), violations := Violations, received := Received,
                    kept := Kept, batches := maps:get(batches, S) + 1, producer := Producer},
            done(S1),
            consumer_loop(reask(S1));
        {'$gen_consumer', {Producer, Tag}, {cancel, Reason}} ->
            erlang:demonitor(Tag, [flush]),
            ended(S#{producer := Producer}, Reason);
        {'$gen_consumer', {Producer, OtherTag}, Events} when is_list(Events) ->
            Producer ! {'$gen_producer', {self(), OtherTag}, {cancel, unknown_subscription}},
            consumer_loop(S);
        {'DOWN', Tag, process, _, Reason} ->
            ended(S, Reason);
        {pb_cancel, Reason} ->
            maps:get(producer, S) ! {'$gen_producer', {self(), Tag}, {cancel, Reason}},
            consumer_loop(S);
        {pb_stats, From, Ref} ->
            From ! {Ref, maps:remove(kept, S#{events => lists:reverse(maps:get(kept, S))})},
            consumer_loop(S)
    end.

reask(S = #{pending := Pending, min := Min, max := Max}) when Pending =< Min ->
    N = Max - Pending,
    maps:get(producer, S) ! {'$gen_producer', {self(), maps:get(tag, S)}, {ask, N}},
    S#{pending := Max, asked := maps:get(asked, S) + N};
reask(S) -> S.

done(#{expect := Expect, received := Received, report := Report, started := T0})
  when is_integer(Expect), Received >= Expect ->
    case get(pb_done) of
        undefined -> put(pb_done, true),
                     Report ! {pb_done, self(), Received,
                               erlang:monotonic_time(microsecond) - T0};
        _ -> ok
    end;
done(_) -> ok.

ended(S = #{mode := Mode, report := Report}, Reason) ->
    case Report of undefined -> ok; _ -> Report ! {pb_ended, self(), Reason} end,
    Exits = case Mode of
                permanent -> true;
                temporary -> false;
                transient -> not (Reason =:= normal orelse Reason =:= shutdown orelse
                                  (is_tuple(Reason) andalso tuple_size(Reason) =:= 2 andalso
                                   element(1, Reason) =:= shutdown))
            end,
    case Exits of
        true -> exit(Reason);
        false -> idle(S#{ended => Reason})
    end.

idle(S) ->
    receive
        {pb_stats, From, Ref} ->
            From ! {Ref, maps:remove(kept, S#{events => lists:reverse(maps:get(kept, S))})},
            idle(S);
        _ -> idle(S)
    end.

stats(Pid) ->
    Ref = make_ref(),
    Pid ! {pb_stats, self(), Ref},
    receive {Ref, Stats} -> Stats after 5000 -> timeout end.

cancel(Consumer, Reason) -> Consumer ! {pb_cancel, Reason}, ok.

cancel_all(Producer, Reason) -> Producer ! {pb_cancel_all, Reason}, ok.

%% For the driver process that started a consumer with report => self().
wait_ended(Pid) ->
    receive {pb_ended, Pid, Reason} -> Reason after 10000 -> timeout end.
